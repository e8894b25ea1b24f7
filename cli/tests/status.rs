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
