//! The transcoder against `prost-reflect`'s serializer on random messages of every type.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Value};

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
                t.set_field_by_name("nanos", Value::I32([0, 1_000, 120_000_000, 999_999_999][rng.below(4) as usize]));
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
            let mut map = HashMap::new();
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
