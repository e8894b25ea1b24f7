//! `memtrack status` run as a user would: the built binary, a real ring.

mod common;

use common::{l1_buffer, memtrack, ring_with_writer};
use memtrack::format::kind;

#[test]
fn status_json_shows_live_usage_without_consuming() {
    let (path, writer) = ring_with_writer("cli-status");
    writer.set_capacity(2, kind::L1, 1 << 20);
    writer.free(&l1_buffer(0));

    let out = memtrack(&["status", "--ring", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["schema"], "memtrack.status/1");
    assert_eq!(doc["usage"][0]["kind"], "L1");
    assert_eq!(doc["usage"][0]["live_bytes"], 2000);
    assert_eq!(doc["usage"][0]["live_buffers"], 2);
    assert_eq!(doc["capacities"][0]["bytes"], 1 << 20);
    assert_eq!(doc["processes"][0]["name"], "model");
    assert_eq!(doc["processes"][0]["state"], "running");
    assert_eq!(doc["records"]["delivered"], 0, "status does not consume");

    let text = memtrack(&["status", "--ring", path.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("2000 B") || text.contains("2.0 KiB"), "{text}");
    assert!(text.contains("1.0 MiB"), "{text}");

    let listing = memtrack(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().strip_prefix("memtrack-").unwrap();
    assert!(doc["rings"].as_array().unwrap().iter().any(|r| r == name));
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_of_a_bad_ring_is_one_line_and_exit_1() {
    let path = std::env::temp_dir().join(format!("memtrack-cli-bad-{}", std::process::id()));
    std::fs::write(&path, b"definitely not a ring").unwrap();
    let out = memtrack(&["status", "--ring", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()) && stderr.contains("shorter than a header"), "{stderr}");
}

#[test]
fn status_usage_is_never_negative_and_leaves_out_ended_processes() {
    let (path, writer) = ring_with_writer("cli-status-negative");
    // Frees of buffers allocated before tracking: the writer's cell for
    // device 5 goes negative.
    for id in 100..103 {
        writer.free(&memtrack::MemtrackBuffer { device_id: 5, ..l1_buffer(id) });
    }
    let status = |path: &std::path::Path| {
        let out = memtrack(&["status", "--ring", path.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let doc = status(&path);
    let cells = doc["usage"].as_array().unwrap();
    assert!(cells.iter().all(|c| c["live_bytes"].as_i64().unwrap() >= 0), "{cells:?}");
    let text = String::from_utf8(memtrack(&["status", "--ring", path.to_str().unwrap()]).stdout).unwrap();
    let negative = |t: &str| {
        t.split_whitespace().any(|w| w.starts_with('-') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
    };
    assert!(!negative(&text), "{text}");
    assert!(text.contains("2.9 KiB") || text.contains("3000 B"), "the three live buffers: {text}");

    // A process that exited holds no device memory; its leftovers stay its own.
    writer.shutdown();
    let text = String::from_utf8(memtrack(&["status", "--ring", path.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("(no live buffers)"), "{text}");
    assert!(text.contains("exited"), "{text}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}
