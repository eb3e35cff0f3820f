//! Generated protobuf and gRPC code for `trading.v1`, behind one alias. Nothing outside `services/`, `server/`
//! and the binaries' client code should name these types.

#![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]

tonic::include_proto!("trading.v1");

/// Encoded descriptor set of `trading.v1` (with its imports and comments), served by server reflection: the
/// same bytes the code above was generated from and the REST gateway reads.
pub const FILE_DESCRIPTOR_SET: &[u8] = trading_proto::FILE_DESCRIPTOR_SET;

/// A UTC time as a protobuf `Timestamp` (every client of this API needs this conversion).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    // Sub-second nanos are always < 1e9, so the cast is lossless.
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}
