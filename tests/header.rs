//! The committed C header is exactly what cbindgen makes of the code, and
//! it compiles cleanly as C11 and C++17.

use std::path::{Path, PathBuf};
use std::process::Command;

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include/memtrack.h")
}

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = Path::new(env!("OUT_DIR")).join("memtrack.h");
    let generated = std::fs::read_to_string(&generated).expect("build.rs writes OUT_DIR/memtrack.h");
    let committed = std::fs::read_to_string(committed()).expect("include/memtrack.h is committed");
    assert!(
        generated == committed,
        "include/memtrack.h is stale: copy {}/memtrack.h over it",
        env!("OUT_DIR")
    );
}

fn compile(compiler: &str, std: &str, ext: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("header-{std}"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join(format!("use_header.{ext}"));
    std::fs::write(
        &source,
        "#include \"memtrack.h\"\n\
         int main(void) {\n\
             memtrack_buffer b = {1, 0, 0x1000, 4096, 0, MEMTRACK_KIND_DRAM, MEMTRACK_FLAG_ALIAS, 0};\n\
             (void)b;\n\
             return memtrack_strerror(MEMTRACK_OK) == 0 ? 1 : MEMTRACK_KIND_KERNEL - 6;\n\
         }\n",
    )
    .unwrap();
    let include = committed().parent().unwrap().to_path_buf();
    let output = Command::new(compiler)
        .args([&format!("-std={std}"), "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(output.status.success(), "{compiler} -std={std}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn header_compiles_as_c11() {
    compile("cc", "c11", "c");
}

#[test]
fn header_compiles_as_cxx17() {
    compile("c++", "c++17", "cpp");
}
