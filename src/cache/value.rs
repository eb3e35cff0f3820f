//! What the cache holds: values that know their own byte encoding for Redis. In the in-process L1 they are kept
//! decoded (behind an `Arc`), so an L1 hit costs no decoding at all.

use std::any::Any;
use std::sync::Arc;

/// A cacheable value.
pub trait CacheValue: Any + Send + Sync + Sized {
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

/// [`CacheValue`] through serde and postcard (compact, stable for a given struct layout).
#[macro_export]
macro_rules! postcard_cache_value {
    ($type:ty) => {
        impl $crate::cache::CacheValue for $type {
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

/// [`CacheValue`] through prost, for generated messages.
#[macro_export]
macro_rules! prost_cache_value {
    ($type:ty) => {
        impl $crate::cache::CacheValue for $type {
            fn encode(&self) -> Vec<u8> {
                prost::Message::encode_to_vec(self)
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                prost::Message::decode(bytes).ok()
            }
        }
    };
}
