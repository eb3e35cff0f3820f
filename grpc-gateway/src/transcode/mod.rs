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
use prost_reflect::DescriptorPool;

/// This message (or these bytes) must go the `prost-reflect` way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

mod plan;
#[cfg(test)]
mod tests;
mod wire;

use plan::{Builder, Field, FieldKind, MapEntry, Plan};
use wire::{comma, fixed32, fixed64, float, quoted, varint, wire_value, zigzag32, zigzag64};

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
