//! Generated protobuf and gRPC code for `trading.v1`, behind one alias. Nothing outside `services/`, `server/`
//! and the binaries' client code should name these types.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("trading.v1");

/// Encoded descriptor set of `trading.v1` (with its imports), served by server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trading_v1_descriptor");

/// A UTC time as a protobuf `Timestamp` (every client of this API needs this conversion).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    // Sub-second nanos are always < 1e9, so the cast is lossless.
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}
