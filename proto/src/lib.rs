//! The `trading.v1` contract as one encoded `FileDescriptorSet` (see `build.rs`): the only place the protos are
//! compiled. The service generates its code from it and serves it through reflection; the REST gateway reads
//! its routes, JSON names and comments from it.

/// The encoded `FileDescriptorSet` of `trading.v1`, with every import and the source info (comments).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trading_v1.binpb"));
