//! Compiles the public contract in `proto/trading/v1/` into tonic servers and clients, plus the encoded
//! descriptor set that server reflection serves.
//!
//! `protoc` comes from `protoc-bin-vendored` unless `PROTOC` points at another one, so a fresh machine
//! needs no system package.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/trading/v1/common.proto",
    "proto/trading/v1/errors.proto",
    "proto/trading/v1/reconciliation.proto",
    "proto/trading/v1/positions.proto",
    "proto/trading/v1/guards.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // tonic-prost-build prints no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trading_v1_descriptor.bin"))
        .compile_protos(PROTOS, &["proto", well_known.to_str().ok_or("non-UTF-8 include path")?])?;
    Ok(())
}
