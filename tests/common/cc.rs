//! Builds the C and C++ programs of `ffi_tests/` with the system compiler
//! (`cc`, `c++`) against the libmemtrack that cargo built for this test
//! run, and runs them with the sanitizer settings they need.
//!
//! Shared by the root package's `tests/ffi.rs` and the CLI's
//! `cli/tests/scenarios.rs` (through `#[path]`), so it uses `std` only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The repository root: the package's manifest dir for the root package,
/// its parent for the CLI.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("include/memtrack.h").is_file())
        .expect("the repository root holds include/memtrack.h")
        .to_path_buf()
}

/// `ffi_tests/` in the repository.
pub fn ffi_tests_dir() -> PathBuf {
    repo_root().join("ffi_tests")
}

/// The directory holding the `libmemtrack.so` and `libmemtrack.a` of this
/// build. Cargo builds every crate type of the `memtrack` library (rlib,
/// cdylib, staticlib) in one rustc run whenever a test needs the library,
/// whether it is the package under test or a dependency (the CLI), and
/// leaves them in `target/<profile>/deps/` next to the test executable;
/// only a root `cargo build` copies them up to `target/<profile>/`.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable is in target/<profile>/deps");
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        if dir.join("libmemtrack.so").is_file() && dir.join("libmemtrack.a").is_file() {
            return dir.to_path_buf();
        }
    }
    panic!("no libmemtrack.so and libmemtrack.a in {} or its parent", deps.display());
}

/// The system libraries the Rust standard library in `libmemtrack.a`
/// needs (`cargo rustc -- --print native-static-libs` on Linux).
pub const NATIVE_STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// The language of a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// C11, compiled by `cc`.
    C,
    /// C++17, compiled by `c++`.
    Cxx,
}

/// How the program gets libmemtrack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `-lmemtrack` against `libmemtrack.so`, with an rpath to it.
    Shared,
    /// `libmemtrack.a` plus the system libraries Rust's std needs.
    Static,
    /// Not at all (a build with `-DMEMTRACK_DISABLE`).
    None,
}

/// One program to build.
#[derive(Clone, Copy, Debug)]
pub struct Build<'a> {
    /// Unique name of the executable within the test crate.
    pub name: &'a str,
    /// Source file in `ffi_tests/`.
    pub source: &'a str,
    pub lang: Lang,
    pub link: Link,
    /// AddressSanitizer + UndefinedBehaviorSanitizer.
    pub sanitize: bool,
    /// Extra `-D` definitions.
    pub defines: &'a [&'a str],
}

/// A built program.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub sanitized: bool,
}

impl Program {
    /// A command running the program without `MEMTRACK_RING` (callers set
    /// it), with the sanitizer runtime options it needs.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.env_remove("MEMTRACK_RING").env_remove("MEMTRACK_CAPACITY").env_remove("MEMTRACK_WAIT_US");
        if self.sanitized {
            // libmemtrack leaks its Writer on purpose: a thread may still be
            // inside a hook when memtrack_shutdown runs, so the mapping must
            // outlive every hook, and after shutdown nothing points to it.
            // LeakSanitizer stays on for everything else; the suppression
            // names the one allocation site, which it can only see with the
            // slow unwinder (Rust's std is built without frame pointers).
            let supp = ffi_tests_dir().join("lsan.supp");
            cmd.env("ASAN_OPTIONS", "detect_leaks=1:fast_unwind_on_malloc=0:abort_on_error=0")
                .env("LSAN_OPTIONS", format!("suppressions={}:print_suppressions=0", supp.display()))
                .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
        }
        cmd
    }
}

/// Builds `b` once per test process (later calls return the same program);
/// panics with the compiler's output if it fails.
pub fn build(b: &Build) -> Program {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<Program>>>>> = OnceLock::new();
    let cell = {
        let mut map = BUILT.get_or_init(Default::default).lock().unwrap();
        map.entry(b.name.to_owned()).or_default().clone()
    };
    cell.get_or_init(|| compile(b)).clone()
}

fn compile(b: &Build) -> Program {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ffi_tests").join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(b.name);
    let (compiler, std) = match b.lang {
        Lang::C => ("cc", "-std=c11"),
        Lang::Cxx => ("c++", "-std=c++17"),
    };
    let mut cmd = Command::new(compiler);
    cmd.args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg("-I")
        .arg(ffi_tests_dir());
    if b.sanitize {
        cmd.args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]);
    }
    for d in b.defines {
        cmd.arg(format!("-D{d}"));
    }
    // Link to a name of this process's own, then rename: test runners that
    // run each test in its own process (nextest) may build the same program
    // at once, and one may already be running it.
    let tmp = out_dir.join(format!("{}.{}.tmp", b.name, std::process::id()));
    cmd.arg(ffi_tests_dir().join(b.source)).arg("-o").arg(&tmp);
    // Libraries after the source: the linker resolves left to right.
    match b.link {
        Link::Shared => {
            let dir = lib_dir();
            // DT_RPATH, not DT_RUNPATH: searched before LD_LIBRARY_PATH,
            // which cargo sets to directories that may hold an older
            // libmemtrack.so (one a root `cargo build` left behind).
            cmd.arg("-L")
                .arg(&dir)
                .arg("-lmemtrack")
                .arg(format!("-Wl,-rpath,{}", dir.display()))
                .arg("-Wl,--disable-new-dtags");
        }
        Link::Static => {
            cmd.arg(lib_dir().join("libmemtrack.a")).args(NATIVE_STATIC_LIBS);
        }
        Link::None => {}
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed to build {}:\n{:?}\n{}",
        b.name,
        cmd,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    Program { path: out, sanitized: b.sanitize }
}

/// `ffi_tests/scopes.cpp` (threads in nested scopes through the C ABI),
/// built once per test binary, sanitized.
pub fn scopes_program() -> Program {
    build(&Build {
        name: "scopes",
        source: "scopes.cpp",
        lang: Lang::Cxx,
        link: Link::Shared,
        sanitize: true,
        defines: &[],
    })
}
