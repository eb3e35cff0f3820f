//! The contract the gateway serves: the descriptor set the `trading-proto` crate compiles from `../proto`,
//! decoded from its raw bytes (so custom options such as `google.api.http` and `google.api.field_behavior`
//! survive as extensions), and the proto comments, which become OpenAPI descriptions.

use std::collections::HashMap;

use prost_reflect::{DescriptorError, DescriptorPool, FieldDescriptor, Value};

/// The encoded `FileDescriptorSet` (with imports and source info).
pub const DESCRIPTOR_SET: &[u8] = trading_proto::FILE_DESCRIPTOR_SET;

/// Decodes the embedded descriptor set.
pub fn pool() -> Result<DescriptorPool, DescriptorError> {
    DescriptorPool::decode(DESCRIPTOR_SET)
}

/// `google.api.field_behavior` values of a field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldBehavior {
    /// `REQUIRED`: the caller must set it.
    pub required: bool,
    /// `OUTPUT_ONLY`: the server sets it; a request's value is ignored.
    pub output_only: bool,
}

/// Reads `google.api.field_behavior` (REQUIRED = 2, OUTPUT_ONLY = 3) from a field's options.
pub fn field_behavior(field: &FieldDescriptor) -> FieldBehavior {
    let pool = field.parent_pool();
    let Some(ext) = pool.get_extension_by_name("google.api.field_behavior") else { return FieldBehavior::default() };
    let options = field.options();
    if !options.has_extension(&ext) {
        return FieldBehavior::default();
    }
    let mut behavior = FieldBehavior::default();
    if let Value::List(values) = options.get_extension(&ext).as_ref() {
        for value in values {
            match value.as_enum_number() {
                Some(2) => behavior.required = true,
                Some(3) => behavior.output_only = true,
                _ => {}
            }
        }
    }
    behavior
}

/// Leading comments by (file, location path), from the descriptor set's source info.
#[derive(Default)]
pub struct Comments {
    by_location: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    /// Collects every leading comment in `pool`.
    pub fn new(pool: &DescriptorPool) -> Comments {
        let mut by_location = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            let Some(info) = &proto.source_code_info else { continue };
            for location in &info.location {
                if let Some(text) = location.leading_comments.as_deref() {
                    let text = clean(text);
                    if !text.is_empty() {
                        by_location.insert((file.name().to_owned(), location.path.clone()), text);
                    }
                }
            }
        }
        Comments { by_location }
    }

    /// The comment at `path` in `file`, if any.
    pub fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.by_location.get(&(file.to_owned(), path.to_vec())).map(String::as_str)
    }
}

/// Joins comment lines, dropping the one leading space protoc keeps; paragraphs stay separate.
fn clean(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end()).collect();
    lines.join("\n").trim().to_owned()
}
