//! Protobuf wire bytes straight to canonical proto3 JSON, for response messages, without building a
//! `DynamicMessage` first.
//!
//! Why: profiling the REST read mix (`perf record` on the server, BENCHMARKS.md) put most of the gateway's cost in
//! `prost-reflect`'s dynamic decode (a map entry and a boxed value per field) and its reflective serializer. Here a
//! plan per message type, built once from the descriptors, maps field numbers to pre-quoted JSON keys and kinds,
//! and one pass over the bytes writes the JSON. The output is the same JSON as
//! `DynamicMessage::serialize_with_options(skip_default_fields(false))` (lowerCamelCase keys, enums as names,
//! 64-bit integers as strings, RFC 3339 Timestamps, `"1.5s"` Durations, unpopulated fields written out); a unit
//! test checks that on random messages of every type. Messages it does not handle (groups, `Any` and the
//! other well-known types, a singular message field sent twice, out-of-range Timestamps) report
//! [`Unsupported`] and the caller falls back to `prost-reflect`.

use std::collections::HashMap;

use prost::Message as _;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

/// This message (or these bytes) must go the `prost-reflect` way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

#[derive(Clone, Debug)]
enum FieldKind {
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
    fn packable(&self) -> bool {
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
struct MapEntry {
    key: Field,
    value: Field,
}

#[derive(Clone, Debug)]
struct Field {
    number: u32,
    /// `"jsonName":`
    key: Vec<u8>,
    kind: FieldKind,
    list: bool,
    presence: bool,
    oneof: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct Plan {
    fields: Vec<Field>,
    /// Field index by number.
    by_number: HashMap<u32, usize>,
}

/// Plans for every message of a descriptor pool that this module can write.
pub struct Transcoder {
    plans: Vec<Plan>,
    by_name: HashMap<String, usize>,
}

/// One field's raw value as it came off the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

enum Slot<'a> {
    Empty,
    One(Raw<'a>),
    Many(Vec<Raw<'a>>),
}

impl Transcoder {
    /// Plans every message of `pool` that has no map, group or unhandled well-known type anywhere inside.
    pub fn new(pool: &DescriptorPool) -> Transcoder {
        let mut builder = Builder { plans: Vec::new(), by_name: HashMap::new(), unsupported: Default::default() };
        for message in pool.all_messages() {
            let _ = builder.plan(&message);
        }
        let Builder { plans, by_name, unsupported } = builder;
        let by_name = by_name.into_iter().filter(|(name, _)| !unsupported.contains(name)).collect();
        Transcoder { plans, by_name }
    }

    /// The plan of a message type, if it has one.
    pub fn plan_for(&self, full_name: &str) -> Option<usize> {
        self.by_name.get(full_name).copied()
    }

    /// Appends the JSON of the message encoded in `bytes` to `out` (untouched on error).
    pub fn write_json(&self, plan: usize, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Unsupported> {
        let start = out.len();
        let result = self.message(plan, bytes, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn message(&self, plan_index: usize, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Unsupported> {
        let plan = &self.plans[plan_index];
        let mut slots: Vec<Slot<'_>> = (0..plan.fields.len()).map(|_| Slot::Empty).collect();
        let mut oneof_last: HashMap<usize, usize> = HashMap::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let number = u32::try_from(key >> 3).map_err(|_| Unsupported)?;
            let raw = wire_value(&mut bytes, key)?;
            let Some(&index) = plan.by_number.get(&number) else { continue }; // unknown field: skipped
            let field = &plan.fields[index];
            if let Some(oneof) = field.oneof
                && let Some(previous) = oneof_last.insert(oneof, index)
                && previous != index
            {
                slots[previous] = Slot::Empty;
            }
            let slot = &mut slots[index];
            if field.list || matches!(field.kind, FieldKind::Map(..)) {
                let list = match slot {
                    Slot::Many(list) => list,
                    _ => {
                        *slot = Slot::Many(Vec::new());
                        let Slot::Many(list) = slot else { unreachable!() };
                        list
                    }
                };
                match raw {
                    Raw::Bytes(mut packed) if field.kind.packable() => {
                        while !packed.is_empty() {
                            list.push(match field.kind {
                                FieldKind::Double | FieldKind::Fixed64 | FieldKind::Sfixed64 => {
                                    Raw::Fixed64(fixed64(&mut packed)?)
                                }
                                FieldKind::Float | FieldKind::Fixed32 | FieldKind::Sfixed32 => {
                                    Raw::Fixed32(fixed32(&mut packed)?)
                                }
                                _ => Raw::Varint(varint(&mut packed)?),
                            });
                        }
                    }
                    raw => list.push(raw),
                }
            } else {
                if matches!(field.kind, FieldKind::Message(_) | FieldKind::Timestamp | FieldKind::Duration)
                    && matches!(slot, Slot::One(_))
                {
                    // A singular message sent twice is merged by protobuf; leave that to prost-reflect.
                    return Err(Unsupported);
                }
                *slot = Slot::One(raw);
            }
        }

        out.push(b'{');
        let mut first = true;
        for (field, slot) in plan.fields.iter().zip(&slots) {
            if let FieldKind::Map(entry) = &field.kind {
                comma(out, &mut first);
                out.extend_from_slice(&field.key);
                let entries = match slot {
                    Slot::Many(entries) => entries.as_slice(),
                    _ => &[],
                };
                self.map(entry, entries, out)?;
                continue;
            }
            match slot {
                Slot::Empty if field.list => {
                    comma(out, &mut first);
                    out.extend_from_slice(&field.key);
                    out.extend_from_slice(b"[]");
                }
                Slot::Empty if field.presence => {}
                Slot::Empty => {
                    comma(out, &mut first);
                    out.extend_from_slice(&field.key);
                    self.default_value(field, out)?;
                }
                Slot::One(raw) => {
                    comma(out, &mut first);
                    out.extend_from_slice(&field.key);
                    self.value(field, *raw, out)?;
                }
                Slot::Many(list) => {
                    comma(out, &mut first);
                    out.extend_from_slice(&field.key);
                    out.push(b'[');
                    for (i, raw) in list.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.value(field, *raw, out)?;
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// A map's entries as one JSON object; a key given twice keeps its last value (protobuf's rule).
    fn map(&self, entry: &MapEntry, entries: &[Raw<'_>], out: &mut Vec<u8>) -> Result<(), Unsupported> {
        let MapEntry { key: key_field, value: value_field } = entry;
        let mut order: Vec<(Vec<u8>, Option<Raw<'_>>)> = Vec::with_capacity(entries.len());
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for entry in entries {
            let Raw::Bytes(mut bytes) = *entry else { return Err(Unsupported) };
            let (mut k, mut v) = (None, None);
            while !bytes.is_empty() {
                let tag = varint(&mut bytes)?;
                let raw = wire_value(&mut bytes, tag)?;
                match tag >> 3 {
                    1 => k = Some(raw),
                    2 => v = Some(raw),
                    _ => {}
                }
            }
            // The key as a JSON string: strings as they are, numbers and booleans in quotes.
            let mut text = Vec::new();
            match k {
                Some(raw) => self.value(key_field, raw, &mut text)?,
                None => self.default_value(key_field, &mut text)?,
            }
            if !text.starts_with(b"\"") {
                text.insert(0, b'"');
                text.push(b'"');
            }
            match seen.get(&text) {
                Some(&i) => order[i].1 = v,
                None => {
                    seen.insert(text.clone(), order.len());
                    order.push((text, v));
                }
            }
        }
        out.push(b'{');
        for (i, (key_text, raw)) in order.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&key_text);
            out.push(b':');
            match (raw, &value_field.kind) {
                (Some(raw), _) => self.value(value_field, raw, out)?,
                (None, FieldKind::Message(plan)) => self.message(*plan, &[], out)?,
                (None, FieldKind::Timestamp | FieldKind::Duration) => return Err(Unsupported),
                (None, _) => self.default_value(value_field, out)?,
            }
        }
        out.push(b'}');
        Ok(())
    }

    fn default_value(&self, field: &Field, out: &mut Vec<u8>) -> Result<(), Unsupported> {
        match &field.kind {
            FieldKind::Double | FieldKind::Float => out.extend_from_slice(b"0.0"),
            FieldKind::Int64 | FieldKind::Uint64 | FieldKind::Sint64 | FieldKind::Fixed64 | FieldKind::Sfixed64 => {
                out.extend_from_slice(b"\"0\"")
            }
            FieldKind::Int32 | FieldKind::Uint32 | FieldKind::Sint32 | FieldKind::Fixed32 | FieldKind::Sfixed32 => {
                out.push(b'0')
            }
            FieldKind::Bool => out.extend_from_slice(b"false"),
            FieldKind::String | FieldKind::Bytes => out.extend_from_slice(b"\"\""),
            FieldKind::Enum(_) => self.value(field, Raw::Varint(0), out)?,
            FieldKind::Map(..) => out.extend_from_slice(b"{}"),
            // Messages always have presence.
            FieldKind::Message(_) | FieldKind::Timestamp | FieldKind::Duration => return Err(Unsupported),
        }
        Ok(())
    }

    fn value(&self, field: &Field, raw: Raw<'_>, out: &mut Vec<u8>) -> Result<(), Unsupported> {
        use std::io::Write as _;
        let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write(out);
        match (&field.kind, raw) {
            (FieldKind::Int32, Raw::Varint(v)) => json(out, &(v as i32)),
            (FieldKind::Uint32, Raw::Varint(v)) => json(out, &(v as u32)),
            (FieldKind::Sint32, Raw::Varint(v)) => json(out, &zigzag32(v as u32)),
            (FieldKind::Fixed32, Raw::Fixed32(v)) => json(out, &v),
            (FieldKind::Sfixed32, Raw::Fixed32(v)) => json(out, &(v as i32)),
            (FieldKind::Int64, Raw::Varint(v)) => quoted(out, v as i64),
            (FieldKind::Uint64, Raw::Varint(v)) => quoted(out, v),
            (FieldKind::Sint64, Raw::Varint(v)) => quoted(out, zigzag64(v)),
            (FieldKind::Fixed64, Raw::Fixed64(v)) => quoted(out, v),
            (FieldKind::Sfixed64, Raw::Fixed64(v)) => quoted(out, v as i64),
            (FieldKind::Bool, Raw::Varint(v)) => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
            (FieldKind::Double, Raw::Fixed64(v)) => float(out, f64::from_bits(v)),
            (FieldKind::Float, Raw::Fixed32(v)) => {
                let f = f32::from_bits(v);
                if f.is_finite() { json(out, &f) } else { float(out, f64::from(f)) }
            }
            (FieldKind::String, Raw::Bytes(b)) => {
                let s = std::str::from_utf8(b).map_err(|_| Unsupported)?;
                json(out, &s)
            }
            (FieldKind::Bytes, Raw::Bytes(b)) => {
                out.push(b'"');
                let _ = write!(
                    out,
                    "{}",
                    base64::display::Base64Display::new(b, &base64::engine::general_purpose::STANDARD)
                );
                out.push(b'"');
            }
            (FieldKind::Enum(names), Raw::Varint(v)) => match names.get(&(v as i32)) {
                Some(name) => json(out, &name.as_str()),
                None => json(out, &(v as i32)),
            },
            (FieldKind::Message(plan), Raw::Bytes(b)) => self.message(*plan, b, out)?,
            (FieldKind::Timestamp, Raw::Bytes(b)) => {
                let t = prost_types::Timestamp::decode(b).map_err(|_| Unsupported)?;
                // The range prost-reflect accepts (years 1 to 9999); outside it, its error is the answer.
                if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
                    return Err(Unsupported);
                }
                out.push(b'"');
                let _ = write!(out, "{t}");
                out.push(b'"');
            }
            (FieldKind::Duration, Raw::Bytes(b)) => {
                let d = prost_types::Duration::decode(b).map_err(|_| Unsupported)?;
                let sign_ok = (d.seconds >= 0 && d.nanos >= 0) || (d.seconds <= 0 && d.nanos <= 0);
                if d.seconds.abs() > 315_576_000_000 || d.nanos.abs() >= 1_000_000_000 || !sign_ok {
                    return Err(Unsupported);
                }
                out.push(b'"');
                let _ = write!(out, "{d}");
                out.push(b'"');
            }
            // A wire type that does not fit the field: prost-reflect decides what that means.
            _ => return Err(Unsupported),
        }
        Ok(())
    }
}

mod erased {
    /// A value serde_json writes (strings escaped exactly as prost-reflect's serializer does).
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("writing JSON to a Vec cannot fail");
        }
    }
}

fn quoted(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "\"{v}\"");
}

fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        serde_json::to_writer(out, &f).expect("finite");
    } else if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if f > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

fn comma(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

fn zigzag32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

fn zigzag64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, Unsupported> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first().ok_or(Unsupported)?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Unsupported)
}

/// The value after a field's key, by the key's wire type (groups are not handled).
fn wire_value<'a>(bytes: &mut &'a [u8], key: u64) -> Result<Raw<'a>, Unsupported> {
    Ok(match key & 7 {
        0 => Raw::Varint(varint(bytes)?),
        1 => Raw::Fixed64(fixed64(bytes)?),
        2 => {
            let len = usize::try_from(varint(bytes)?).map_err(|_| Unsupported)?;
            Raw::Bytes(take(bytes, len)?)
        }
        5 => Raw::Fixed32(fixed32(bytes)?),
        _ => return Err(Unsupported),
    })
}

fn fixed64(bytes: &mut &[u8]) -> Result<u64, Unsupported> {
    Ok(u64::from_le_bytes(take(bytes, 8)?.try_into().map_err(|_| Unsupported)?))
}

fn fixed32(bytes: &mut &[u8]) -> Result<u32, Unsupported> {
    Ok(u32::from_le_bytes(take(bytes, 4)?.try_into().map_err(|_| Unsupported)?))
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Unsupported> {
    if bytes.len() < n {
        return Err(Unsupported);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

struct Builder {
    plans: Vec<Plan>,
    by_name: HashMap<String, usize>,
    unsupported: std::collections::HashSet<String>,
}

impl Builder {
    /// The plan index of `message`, building it (and what it contains) first; `Err` if anything inside is
    /// unsupported.
    fn plan(&mut self, message: &MessageDescriptor) -> Result<usize, Unsupported> {
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

#[cfg(test)]
mod tests {
    use prost_reflect::{DynamicMessage, FieldDescriptor, SerializeOptions, Value};

    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_string(rng: &mut Rng) -> String {
        const PIECES: &[&str] =
            &["", "a", "XAUUSD", "0.00012", "\"", "\\", "\n", "\u{1}", "é", "€", "😀", "</script>", " "];
        (0..rng.below(4)).map(|_| PIECES[rng.below(PIECES.len() as u64) as usize]).collect()
    }

    fn random_value(rng: &mut Rng, field: &FieldDescriptor, depth: usize) -> Option<Value> {
        Some(match field.kind() {
            Kind::Double => Value::F64([0.0, 1.5, -2.25, 1e300, f64::NAN, f64::INFINITY][rng.below(6) as usize]),
            Kind::Float => Value::F32([0.0, 1.5, -2.25, f32::NEG_INFINITY][rng.below(4) as usize]),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32([0, 1, -1, i32::MIN, i32::MAX][rng.below(5) as usize])
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64([0, 7, -7, i64::MIN, i64::MAX][rng.below(5) as usize])
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32([0, 1, u32::MAX][rng.below(3) as usize]),
            Kind::Uint64 | Kind::Fixed64 => Value::U64([0, 1, u64::MAX][rng.below(3) as usize]),
            Kind::Bool => Value::Bool(rng.below(2) == 1),
            Kind::String => Value::String(random_string(rng)),
            Kind::Bytes => Value::Bytes(random_string(rng).into_bytes().into()),
            Kind::Enum(e) => {
                let values: Vec<i32> = e.values().map(|v| v.number()).collect();
                // Sometimes a number the enum does not have (a newer server's value).
                Value::EnumNumber(if rng.below(5) == 0 { 99 } else { values[rng.below(values.len() as u64) as usize] })
            }
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => {
                    let mut t = DynamicMessage::new(m);
                    t.set_field_by_name("seconds", Value::I64([0, 1_796_131_740, -1][rng.below(3) as usize]));
                    t.set_field_by_name(
                        "nanos",
                        Value::I32([0, 1_000, 120_000_000, 999_999_999][rng.below(4) as usize]),
                    );
                    Value::Message(t)
                }
                "google.protobuf.Duration" => {
                    let mut d = DynamicMessage::new(m);
                    let (s, n) = [(0, 0), (1, 500_000_000), (-3, -1), (10, 0)][rng.below(4) as usize];
                    d.set_field_by_name("seconds", Value::I64(s));
                    d.set_field_by_name("nanos", Value::I32(n));
                    Value::Message(d)
                }
                _ if depth > 3 => return None,
                _ => Value::Message(random_message(rng, &m, depth + 1)),
            },
        })
    }

    fn random_message(rng: &mut Rng, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(desc.clone());
        for field in desc.fields() {
            if rng.below(3) == 0 {
                continue; // unpopulated
            }
            if field.is_map() {
                let Kind::Message(entry) = field.kind() else { unreachable!() };
                let value_field = entry.map_entry_value_field();
                let mut map = std::collections::HashMap::new();
                for _ in 0..rng.below(4) {
                    if let Some(value) = random_value(rng, &value_field, depth) {
                        map.insert(prost_reflect::MapKey::String(random_string(rng)), value);
                    }
                }
                message.set_field(&field, Value::Map(map));
            } else if field.is_list() {
                let n = rng.below(4);
                let values: Vec<Value> = (0..n).filter_map(|_| random_value(rng, &field, depth)).collect();
                message.set_field(&field, Value::List(values));
            } else if let Some(value) = random_value(rng, &field, depth) {
                message.set_field(&field, value);
            }
        }
        message
    }

    #[test]
    fn writes_what_prost_reflect_writes_for_every_planned_message() {
        let pool = crate::descriptors::pool().unwrap();
        let transcoder = Transcoder::new(&pool);
        let options = SerializeOptions::new().skip_default_fields(false);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut planned = 0;
        for desc in pool.all_messages().filter(|m| !m.is_map_entry()) {
            let Some(plan) = transcoder.plan_for(desc.full_name()) else {
                // Every message of the API has a plan; of the Google ones, those without Any or other WKTs.
                assert_ne!(desc.package_name(), "trading.v1", "{} has no plan", desc.full_name());
                continue;
            };
            planned += 1;
            for _ in 0..300 {
                let message = random_message(&mut rng, &desc, 0);
                let bytes = message.encode_to_vec();
                let expected = DynamicMessage::decode(desc.clone(), bytes.as_slice())
                    .unwrap()
                    .serialize_with_options(serde_json::value::Serializer, &options)
                    .unwrap();
                let mut out = Vec::new();
                transcoder.write_json(plan, &bytes, &mut out).unwrap();
                let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(got, expected, "{}", desc.full_name());
            }
        }
        assert!(planned > 20, "{planned}");
    }

    #[test]
    fn unhandled_input_falls_back() {
        let pool = crate::descriptors::pool().unwrap();
        let transcoder = Transcoder::new(&pool);
        assert!(transcoder.plan_for("google.rpc.Status").is_none(), "Any is left to prost-reflect");
        assert!(transcoder.plan_for("google.rpc.ErrorInfo").is_some());
        let plan = transcoder.plan_for("trading.v1.GetPositionResponse").unwrap();
        let mut out = b"keep".to_vec();
        // Field 1 (position), length 5, but only 2 bytes follow.
        assert_eq!(transcoder.write_json(plan, &[0x0a, 0x05, 0x01, 0x02], &mut out), Err(Unsupported));
        assert_eq!(out, b"keep");
    }
}
