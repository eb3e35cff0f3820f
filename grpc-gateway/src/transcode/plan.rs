//! The plans: per message type, built once from the descriptors, its fields by number with their pre-quoted
//! JSON keys and kinds.

use std::collections::HashMap;

use prost_reflect::{Kind, MessageDescriptor};

use super::Unsupported;

#[derive(Clone, Debug)]
pub(super) enum FieldKind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// Value names by number, and the name of the default (0) value, if any.
    Enum(HashMap<i32, String>),
    Message(usize),
    Timestamp,
    Duration,
    /// `map<K, V>`: entries are messages with the key in field 1 and the value in field 2.
    Map(Box<MapEntry>),
}

impl FieldKind {
    /// Scalars that may arrive packed.
    pub(super) fn packable(&self) -> bool {
        !matches!(
            self,
            FieldKind::String
                | FieldKind::Bytes
                | FieldKind::Message(_)
                | FieldKind::Timestamp
                | FieldKind::Duration
                | FieldKind::Map(..)
        )
    }
}

/// A map's key and value fields (entry fields 1 and 2), planned once.
#[derive(Clone, Debug)]
pub(super) struct MapEntry {
    pub(super) key: Field,
    pub(super) value: Field,
}

#[derive(Clone, Debug)]
pub(super) struct Field {
    pub(super) number: u32,
    /// `"jsonName":`
    pub(super) key: Vec<u8>,
    pub(super) kind: FieldKind,
    pub(super) list: bool,
    pub(super) presence: bool,
    pub(super) oneof: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    pub(super) fields: Vec<Field>,
    /// Field index by number.
    pub(super) by_number: HashMap<u32, usize>,
}

pub(super) struct Builder {
    pub(super) plans: Vec<Plan>,
    pub(super) by_name: HashMap<String, usize>,
    pub(super) unsupported: std::collections::HashSet<String>,
}

impl Builder {
    /// The plan index of `message`, building it (and what it contains) first; `Err` if anything inside is
    /// unsupported.
    pub(super) fn plan(&mut self, message: &MessageDescriptor) -> Result<usize, Unsupported> {
        let name = message.full_name().to_owned();
        if self.unsupported.contains(&name) {
            return Err(Unsupported);
        }
        if let Some(&index) = self.by_name.get(&name) {
            return Ok(index); // built, or being built (a recursive type)
        }
        let index = self.plans.len();
        self.plans.push(Plan::default());
        self.by_name.insert(name.clone(), index);
        let mut fields = Vec::new();
        let oneofs: Vec<String> = message.oneofs().map(|o| o.full_name().to_owned()).collect();
        let built: Result<(), Unsupported> = (|| {
            // Well-known types have JSON forms of their own: Timestamp and Duration are written as fields (see
            // `kind`), the others are left to prost-reflect.
            if message.is_map_entry() || name.starts_with("google.protobuf.") {
                return Err(Unsupported);
            }
            for field in message.fields() {
                if field.is_group() {
                    return Err(Unsupported);
                }
                let kind = match field.kind() {
                    Kind::Message(entry) if field.is_map() => {
                        let part = |number, kind| Field {
                            number,
                            key: Vec::new(),
                            kind,
                            list: false,
                            presence: false,
                            oneof: None,
                        };
                        FieldKind::Map(Box::new(MapEntry {
                            key: part(1, self.kind(&entry.map_entry_key_field())?),
                            value: part(2, self.kind(&entry.map_entry_value_field())?),
                        }))
                    }
                    _ => self.kind(&field)?,
                };
                let mut key = Vec::with_capacity(field.json_name().len() + 3);
                serde_json::to_writer(&mut key, field.json_name()).expect("a string");
                key.push(b':');
                let oneof = field.containing_oneof().and_then(|o| oneofs.iter().position(|n| n == o.full_name()));
                fields.push(Field {
                    number: field.number(),
                    key,
                    kind,
                    list: field.is_list(),
                    presence: field.supports_presence(),
                    oneof,
                });
            }
            Ok(())
        })();
        match built {
            Ok(()) => {
                let by_number = fields.iter().enumerate().map(|(i, f)| (f.number, i)).collect();
                self.plans[index] = Plan { fields, by_number };
                Ok(index)
            }
            Err(e) => {
                self.unsupported.insert(name);
                Err(e)
            }
        }
    }
}

impl Builder {
    fn kind(&mut self, field: &prost_reflect::FieldDescriptor) -> Result<FieldKind, Unsupported> {
        Ok(match field.kind() {
            Kind::Double => FieldKind::Double,
            Kind::Float => FieldKind::Float,
            Kind::Int32 => FieldKind::Int32,
            Kind::Int64 => FieldKind::Int64,
            Kind::Uint32 => FieldKind::Uint32,
            Kind::Uint64 => FieldKind::Uint64,
            Kind::Sint32 => FieldKind::Sint32,
            Kind::Sint64 => FieldKind::Sint64,
            Kind::Fixed32 => FieldKind::Fixed32,
            Kind::Fixed64 => FieldKind::Fixed64,
            Kind::Sfixed32 => FieldKind::Sfixed32,
            Kind::Sfixed64 => FieldKind::Sfixed64,
            Kind::Bool => FieldKind::Bool,
            Kind::String => FieldKind::String,
            Kind::Bytes => FieldKind::Bytes,
            Kind::Enum(e) => {
                if e.full_name() == "google.protobuf.NullValue" {
                    return Err(Unsupported);
                }
                FieldKind::Enum(e.values().map(|v| (v.number(), v.name().to_owned())).collect())
            }
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => FieldKind::Timestamp,
                "google.protobuf.Duration" => FieldKind::Duration,
                _ => FieldKind::Message(self.plan(&m)?),
            },
        })
    }
}
