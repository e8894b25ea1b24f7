//! `memtrack report --html` loaded in real headless Chromium (Debian's
//! package; `.ci/run` installs it): the page renders with no script error
//! and no console error, holds a chart per device and a row per leak, sorts
//! its leak table, and a screenshot is left in the test output.

use std::path::Path;
use std::process::Command;

mod common;

use common::{TempFile, memtrack, memtrack_env, report_json};
use memtrack::ffi::*;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// The helper process's entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    assert_eq!(role, "workload");
    // SAFETY: NULL: use $MEMTRACK_RING.
    assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, 0);
    let mark = |label: &std::ffi::CStr| {
        // SAFETY: a NUL-terminated string.
        unsafe { memtrack_mark(label.as_ptr()) }
    };
    for device in 0..3 {
        memtrack_set_capacity(device, MEMTRACK_KIND_L1, 1_536 << 10);
    }
    mark(c"load");
    for id in 0..30u64 {
        let device = (id % 3) as u32;
        memtrack_alloc(device, MEMTRACK_KIND_DRAM, id, 0x1000 * id, (id + 1) << 20);
        memtrack_alloc(device, MEMTRACK_KIND_L1, 100 + id, 0, 16 << 10);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    mark(c"compute </script> & <b>");
    for id in 0..25u64 {
        let device = (id % 3) as u32;
        memtrack_free(device, MEMTRACK_KIND_DRAM, id, 0x1000 * id, (id + 1) << 20);
        memtrack_free(device, MEMTRACK_KIND_L1, 100 + id, 0, 16 << 10);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    memtrack_free(1, MEMTRACK_KIND_L1, 999, 0, 64); // unknown free
    mark(c"teardown");
    std::process::exit(0);
}

/// Headless Chromium with the flags that keep it off the network.
fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn report_html_renders_in_headless_chromium_without_errors() {
    let file = TempFile::new("report-html");
    let exe = std::env::current_exe().unwrap();
    let out = memtrack_env(
        &[
            "record",
            "-o",
            file.str(),
            "--",
            exe.to_str().unwrap(),
            "--exact",
            "helper",
            "--nocapture",
            "--test-threads=1",
        ],
        &[(ROLE, "workload")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(file.path());
    let page = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}.html", std::process::id()));
    let out = memtrack(&["report", file.str(), "--html", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.len() > 10_000 && !html.contains("</script> & <b>"), "the mark label is escaped");

    let profile = tempdir("chromium-profile");
    let url = format!("file://{}#sort-leaks=size", page.display());
    let dump = chromium(&profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium must be installed (.ci/run)");
    let dom = String::from_utf8_lossy(&dump.stdout);
    let log = String::from_utf8_lossy(&dump.stderr);
    assert!(dump.status.success(), "{log}");
    // The script ran to its end, with no error and no console error (the
    // page counts both in data-errors), and the policy refused nothing.
    let body = dom.split("<body").nth(1).and_then(|b| b.split('>').next()).unwrap_or("");
    assert!(body.contains("data-rendered=\"ok\""), "<body{body}>\n{log}");
    assert!(!body.contains("data-errors"), "<body{body}>");
    for bad in ["Uncaught", "Refused to", ":CONSOLE(", "console.error"] {
        assert!(!log.contains(bad), "{bad} in the browser log:\n{log}");
    }
    // A stacked chart per device, a band per kind, the marks.
    let devices = report["devices"].as_array().unwrap().len();
    assert_eq!(devices, 3);
    assert_eq!(dom.matches("class=\"stacked\"").count(), devices, "one chart per device");
    assert_eq!(dom.matches("class=\"band\"").count(), 6, "DRAM and L1 on each device");
    assert_eq!(dom.matches("class=\"peak\"").count(), 6);
    assert!(dom.contains(">compute &lt;/script&gt; &amp; &lt;b&gt;</text>"), "the mark, as text");
    // The leak table: a row per remaining buffer, sorted by size, largest
    // first (the #sort-leaks=size link).
    let leaks_html = dom.split("id=\"leaks\"").nth(1).unwrap().split("</table>").next().unwrap();
    let rows: Vec<&str> = leaks_html.split("<tr>").skip(2).collect();
    let remaining = report["remaining"].as_array().unwrap();
    assert_eq!(rows.len(), remaining.len());
    assert_eq!(remaining.len(), 10, "5 DRAM and 5 L1 buffers never freed");
    let first_cell =
        |row: &str| row.split("<td class=\"num\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    assert_eq!(first_cell(rows[0]), "30.0 MiB", "largest first");
    assert!(leaks_html.contains("sorted-desc"));
    assert!(dom.contains("unknown_free"));

    // A screenshot, kept with the test's output.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-html.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempdir("chromium-profile-shot");
    let out = chromium(&profile)
        .args(["--window-size=1300,2000", &format!("--screenshot={}", shot.display())])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    println!("screenshot: {}", shot.display());
    println!("page: {}", page.display());
}

/// A new empty directory under the temporary directory.
fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("memtrack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
