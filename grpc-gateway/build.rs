//! Compiles the service's public contract (`../proto/trading/v1/`) plus the Google API protos it uses into one
//! encoded `FileDescriptorSet` with imports and source info (comments), embedded in the gateway. Routes, JSON
//! mapping and the OpenAPI document are all derived from it at start-up; no code is generated.
//!
//! `protoc` comes from `protoc-bin-vendored` unless `PROTOC` points at another one.

use std::path::PathBuf;
use std::process::Command;

const PROTOS: &[&str] = &[
    "trading/v1/common.proto",
    "trading/v1/errors.proto",
    "trading/v1/reconciliation.proto",
    "trading/v1/positions.proto",
    "trading/v1/guards.proto",
    // Error details: so `google.rpc.Status.details` (Any) can be written out as typed JSON.
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let well_known = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("gateway_descriptor.bin");
    let status = Command::new(protoc)
        .arg("--include_imports")
        .arg("--include_source_info")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", proto_root.display()))
        .arg(format!("-I{}", well_known.display()))
        .args(PROTOS)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed: {status}").into());
    }
    Ok(())
}
