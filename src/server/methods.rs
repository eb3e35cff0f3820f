//! The gRPC methods this server serves, by path (`/package.Service/Method`), read once from the descriptor
//! sets it registers (`trading.v1`, health, reflection v1 and v1alpha).
//!
//! Metrics and trace spans name a call by its method. A path from a caller is not trusted for that: every
//! made-up path would otherwise become a metric series of its own, kept for the life of the process (a cost
//! any caller could grow without bound). Paths that name no served method are all counted as `_OTHER`, the
//! name OpenTelemetry's RPC conventions give them.

use std::collections::HashSet;
use std::sync::OnceLock;

use prost::Message;

/// The name of every call to a method that is not served.
pub const OTHER: &str = "_OTHER";

/// Whether `path` is a health check (public, never refused for load, not traced).
pub fn is_health(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// Whether `path` is server reflection, v1 or v1alpha (public unless configured otherwise, not traced).
pub fn is_reflection(path: &str) -> bool {
    path.starts_with("/grpc.reflection.")
}

/// `package.Service/Method` for a served method's path, else [`OTHER`].
pub fn name(path: &str) -> &'static str {
    served().get(path.trim_start_matches('/')).map_or(OTHER, String::as_str)
}

fn served() -> &'static HashSet<String> {
    static SERVED: OnceLock<HashSet<String>> = OnceLock::new();
    SERVED.get_or_init(|| {
        let sets = [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut served = HashSet::new();
        for set in sets {
            // These are compiled into the binary; one that does not decode names no method.
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        served.insert(format!("{package}.{service_name}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
        served
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_keep_their_names_and_any_other_path_is_other() {
        assert_eq!(name("/trading.v1.GuardsService/GetGuardStatus"), "trading.v1.GuardsService/GetGuardStatus");
        assert_eq!(name("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(
            name("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(name("/trading.v1.GuardsService/NoSuchMethod"), OTHER);
        assert_eq!(name("/made.up/x"), OTHER);
        assert_eq!(name(""), OTHER);
    }
}
