//! What the CLI tests share: running the built `memtrack`, temporary record
//! files that remove themselves, and reading a report back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// Runs `memtrack ARGS` with no `MEMTRACK_RING` and no input.
pub fn memtrack(args: &[&str]) -> Output {
    memtrack_env(args, &[])
}

/// As [`memtrack`], with extra environment variables.
pub fn memtrack_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memtrack"));
    cmd.args(args).env_remove("MEMTRACK_RING").stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run memtrack")
}

/// A file path in the temporary directory, unique to this test process and
/// call, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("memtrack-cli-{tag}-{}-{n}.mtr", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `memtrack report FILE --json`, which must succeed, parsed.
pub fn report_json(file: impl AsRef<Path>) -> Value {
    let file = file.as_ref().to_str().unwrap();
    let out = memtrack(&["report", file, "--json"]);
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}
