//! Generates the C header from the `ffi` module into `OUT_DIR/memtrack.h`.
//!
//! The committed `include/memtrack.h` is a copy of it; the test
//! `tests/header.rs` fails when the two differ, so the header is always
//! what this cbindgen version makes of the code (as rustls-ffi does). The
//! build never writes outside `OUT_DIR`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/buffer.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // The loom build compiles only the protocol; there is no C ABI to describe.
    if std::env::var_os("CARGO_CFG_LOOM").is_some() {
        return;
    }
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("memtrack.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    // Only the C ABI's own files: parsing the whole crate would export the
    // file format's constants too, under bare names (`#define DRAM 0`) that
    // break any C++ declaring `enum class BufferType { DRAM, ... }`.
    let ffi = crate_dir.join("src/ffi");
    let builder = cbindgen::Builder::new().with_config(config);
    let builder = ["mod.rs", "codes.rs", "global.rs"]
        .into_iter()
        .filter(|file| ffi.join(file).exists())
        .fold(builder, |builder, file| builder.with_src(ffi.join(file)));
    // The buffer type lives below the writer (src/buffer.rs); ffi re-exports it.
    let builder = builder.with_src(crate_dir.join("src/buffer.rs"));
    match builder.generate() {
        Ok(bindings) => {
            bindings.write_to_file(&out);
        }
        Err(err) => panic!("cbindgen could not generate memtrack.h: {err}"),
    }
}
