//! Generates the Rust types and gRPC servers and clients of `trading.v1` from the contract's one descriptor set,
//! compiled by the `trading-proto` crate (`proto/`): protoc runs once, there, and this only turns its output
//! into code (`src/pb.rs` includes it).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Rerun when this script or `trading-proto` changes (a changed build dependency reruns it anyway).
    println!("cargo:rerun-if-changed=build.rs");
    let set = prost_types::FileDescriptorSet::decode(trading_proto::FILE_DESCRIPTOR_SET)?;
    tonic_prost_build::configure().compile_fds(set)?;
    Ok(())
}
