//! Generates the C header from the `ffi` module into `OUT_DIR/memtrack.h`.
//!
//! The committed `include/memtrack.h` is a copy of it; the test
//! `tests/header.rs` fails when the two differ, so the header is always
//! what this cbindgen version makes of the code (as rustls-ffi does). The
//! build never writes outside `OUT_DIR`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // The loom build compiles only the protocol; there is no C ABI to describe.
    if std::env::var_os("CARGO_CFG_LOOM").is_some() {
        return;
    }
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("memtrack.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(bindings) => {
            bindings.write_to_file(&out);
        }
        Err(err) => panic!("cbindgen could not generate memtrack.h: {err}"),
    }
}
