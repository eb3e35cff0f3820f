//! Reading the protobuf wire format, and writing JSON scalars.

use super::{Raw, Unsupported};

pub(super) fn quoted(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "\"{v}\"");
}

pub(super) fn float(out: &mut Vec<u8>, f: f64) {
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

pub(super) fn comma(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

pub(super) fn zigzag32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

pub(super) fn zigzag64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

pub(super) fn varint(bytes: &mut &[u8]) -> Result<u64, Unsupported> {
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
pub(super) fn wire_value<'a>(bytes: &mut &'a [u8], key: u64) -> Result<Raw<'a>, Unsupported> {
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

pub(super) fn fixed64(bytes: &mut &[u8]) -> Result<u64, Unsupported> {
    Ok(u64::from_le_bytes(take(bytes, 8)?.try_into().map_err(|_| Unsupported)?))
}

pub(super) fn fixed32(bytes: &mut &[u8]) -> Result<u32, Unsupported> {
    Ok(u32::from_le_bytes(take(bytes, 4)?.try_into().map_err(|_| Unsupported)?))
}

pub(super) fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Unsupported> {
    if bytes.len() < n {
        return Err(Unsupported);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}
