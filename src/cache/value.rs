//! What the cache holds: values that know their own byte encoding for Redis. In the in-process L1 they are kept
//! decoded (behind an `Arc`), so an L1 hit costs no decoding at all.

use std::any::Any;
use std::sync::Arc;

/// A cacheable value.
pub trait CacheValue: Any + Send + Sync + Sized {
    /// The version of [`CacheValue::encode`]'s layout, stored in each value's header: a value stored under
    /// another version is a miss. Bump it whenever the bytes of a value change meaning (a field added, removed,
    /// reordered or retyped): postcard is not self-describing, so across a deploy an older replica's bytes could
    /// otherwise decode into the new struct as different values and be served as hits. Each type's test pins the
    /// fingerprint of a populated sample to its version ([`assert_layout`]), so a change cannot go unnoticed.
    const SCHEMA: u16;
    /// The bytes stored in Redis.
    fn encode(&self) -> Vec<u8>;
    /// Back from those bytes; `None` when they are not a value of this type (a format change, corruption),
    /// which the cache treats as a miss.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// A decoded value of any cacheable type, shared between the L1 and the callers of one load.
pub(super) type Shared = Arc<dyn Any + Send + Sync>;

/// The value behind a [`Shared`], if it has type `T`.
pub(super) fn downcast<T: CacheValue>(shared: Shared) -> Option<Arc<T>> {
    shared.downcast::<T>().ok()
}

/// [`CacheValue`] through serde and postcard (compact, stable for a given struct layout), with the layout's
/// version: `postcard_cache_value!(Book, schema = 1)`.
#[macro_export]
macro_rules! postcard_cache_value {
    ($type:ty, schema = $schema:literal) => {
        impl $crate::cache::CacheValue for $type {
            const SCHEMA: u16 = $schema;
            fn encode(&self) -> Vec<u8> {
                // Serialising plain data into a Vec cannot fail; an empty payload would decode as a miss.
                postcard::to_allocvec(self).unwrap_or_default()
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                postcard::from_bytes(bytes).ok()
            }
        }
    };
}

/// [`CacheValue`] through prost, for generated messages (protobuf's own rules keep old bytes readable, so the
/// version only changes if a field's meaning does): `prost_cache_value!(Message, schema = 1)`.
#[macro_export]
macro_rules! prost_cache_value {
    ($type:ty, schema = $schema:literal) => {
        impl $crate::cache::CacheValue for $type {
            const SCHEMA: u16 = $schema;
            fn encode(&self) -> Vec<u8> {
                prost::Message::encode_to_vec(self)
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                prost::Message::decode(bytes).ok()
            }
        }
    };
}

/// Test helper: fails unless `sample` (a value with every optional field set and every list non-empty) encodes
/// to bytes whose FNV-1a fingerprint is `fingerprint`, under layout version `schema`. When the layout changes,
/// the message says which version to bump and the fingerprint to pin.
#[cfg(test)]
pub(crate) fn assert_layout<T: CacheValue>(sample: &T, schema: u16, fingerprint: u64) {
    let actual = sample
        .encode()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    assert!(
        actual == fingerprint && T::SCHEMA == schema,
        "the cached layout of {} changed (fingerprint {actual:#018x}, pinned {fingerprint:#018x}; schema {}, pinned \
         {schema}): if its bytes changed, bump its `schema = ` to {} and pin {actual:#018x} with it",
        std::any::type_name::<T>(),
        T::SCHEMA,
        schema + 1,
    );
}
