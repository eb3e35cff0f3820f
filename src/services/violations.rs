//! Decoding a write request while collecting every invalid field, so a caller sees all the problems of a
//! request at once (SubmitBrokerSync, SubmitQuotes).

use chrono::{DateTime, Duration, DurationRound, Utc};
use rust_decimal::Decimal;

use super::decode;
use super::error::{ApiError, FieldViolation};
use crate::domain::Side;
use crate::domain::bounds::DecimalBounds;
use crate::pb;

/// How far in the future a reported time may be (clock skew between feed, worker and server).
const MAX_FUTURE: Duration = Duration::seconds(5);
/// The earliest reported time accepted (nothing this service tracks happened before 2000).
const EARLIEST_REPORTED: i64 = 946_684_800; // 2000-01-01T00:00:00Z

/// The invalid fields found so far.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// The value, or `None` with its violations recorded.
    pub fn take<T>(&mut self, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(ApiError::InvalidArgument(v)) => {
                self.0.extend(v);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation { field: String::new(), description: other.to_string() });
                None
            }
        }
    }

    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    /// How many violations are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `INVALID_ARGUMENT` naming every violation recorded so far, if there is one.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument(std::mem::take(&mut self.0))) }
    }

    /// A required text of at most `max` characters.
    pub fn required_text(&mut self, field: &str, value: &str, max: usize) -> Option<String> {
        if value.is_empty() {
            self.add(field, "is required");
            None
        } else if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
            None
        } else {
            Some(value.to_owned())
        }
    }

    /// A required decimal within `bounds`.
    pub fn decimal(&mut self, field: &str, value: &str, bounds: &DecimalBounds) -> Option<Decimal> {
        self.take(decode::decimal(field, value, bounds))
    }

    /// An optional decimal (empty: none) within `bounds`.
    pub fn optional_decimal(&mut self, field: &str, value: &str, bounds: &DecimalBounds) -> Option<Option<Decimal>> {
        self.take(decode::optional_decimal(field, value, bounds))
    }

    /// A required side.
    pub fn side(&mut self, field: &str, value: i32) -> Option<Side> {
        match pb::Side::try_from(value) {
            Ok(pb::Side::Buy) => Some(Side::Buy),
            Ok(pb::Side::Sell) => Some(Side::Sell),
            _ => {
                self.add(field, "must be SIDE_BUY or SIDE_SELL");
                None
            }
        }
    }

    /// A required reported time: not in the future beyond clock skew, not before 2000, kept to the microsecond
    /// (what the database stores).
    pub fn reported_time(
        &mut self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let Some(t) = value else {
            self.add(field, "is required");
            return None;
        };
        let t = self.take(decode::timestamp(field, t))?;
        if t > now + MAX_FUTURE {
            self.add(
                field,
                format!("is in the future ({t} is after the server time {now}; at most 5 s of skew is accepted)"),
            );
            return None;
        }
        if t.timestamp() < EARLIEST_REPORTED {
            self.add(field, format!("is too far in the past ({t} is before 2000-01-01T00:00:00Z)"));
            return None;
        }
        // The database keeps microseconds; dropping finer digits here keeps every comparison (newest quote of a
        // batch, a candle already stored) on the precision that is stored.
        t.duration_trunc(Duration::microseconds(1)).ok()
    }

    /// A list of at most `max` entries.
    pub fn at_most(&mut self, field: &str, len: usize, max: usize) {
        if len > max {
            self.add(field, format!("has {len} entries; at most {max} are accepted per request"));
        }
    }

    /// Flags the second and later occurrences of a key.
    pub fn duplicates<'a>(&mut self, keys: impl Iterator<Item = &'a str>, field: impl Fn(usize) -> String) {
        let mut seen = std::collections::HashMap::new();
        for (i, key) in keys.enumerate() {
            if let Some(first) = seen.insert(key, i) {
                self.add(field(i), format!("{key:?} repeats entry {first}"));
            }
        }
    }
}
