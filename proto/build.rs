//! Runs protoc once over the contract (`trading/v1/*.proto`) and the Google error model its errors use, into
//! one encoded `FileDescriptorSet` with imports and source info (comments). Everything else reads that set: the
//! service's `build.rs` generates its Rust types and gRPC stubs from it, server reflection serves it, and the
//! REST gateway derives its routes, JSON mapping and OpenAPI document from it.
//!
//! `protoc` comes from `protoc-bin-vendored` unless `PROTOC` points at another one, so a fresh machine needs no
//! system package.

use std::path::PathBuf;
use std::process::Command;

/// The files compiled (their imports come along).
const PROTOS: &[&str] = &[
    "trading/v1/common.proto",
    "trading/v1/errors.proto",
    "trading/v1/reconciliation.proto",
    "trading/v1/positions.proto",
    "trading/v1/guards.proto",
    // The error model: so `google.rpc.Status.details` can be written out as typed JSON and decoded by clients
    // through reflection.
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for dir in ["trading", "google"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let well_known = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("trading_v1.binpb");
    let status = Command::new(protoc)
        .arg("--include_imports")
        .arg("--include_source_info")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", root.display()))
        .arg(format!("-I{}", well_known.display()))
        .args(PROTOS)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed: {status}").into());
    }
    Ok(())
}
