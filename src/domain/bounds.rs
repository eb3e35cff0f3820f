//! The bounds of every decimal the service accepts, per kind (prices, volumes, money, percentages).
//!
//! Decimals are exact: a value is accepted only when it fits its kind's bounds *as written* (integer digits and
//! decimal places are counted in the text), so nothing is ever rounded on the way in, and no accepted value can
//! make a later computation leave `rust_decimal`'s range (28 significant digits): every product the rules form
//! from bounded inputs stays far inside it, and the rules use checked arithmetic anyway. The schema mirrors these
//! bounds with CHECK constraints (migration `20261201000001_decimal_bounds.sql`); the proto comments state them.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Which sign a kind allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Strictly greater than zero.
    Positive,
    /// Zero or more.
    NonNegative,
    /// Any sign.
    Any,
}

/// The bounds of one kind of decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalBounds {
    /// What the kind is called in error messages.
    pub kind: &'static str,
    /// Allowed sign.
    pub sign: Sign,
    /// The absolute value must be below `10^max_integer_digits`.
    pub max_integer_digits: u32,
    /// At most this many digits after the decimal point.
    pub max_scale: u32,
}

/// Prices (quote currency): `0 < price < 1,000,000,000`, at most 10 decimal places.
pub const PRICE: DecimalBounds =
    DecimalBounds { kind: "price", sign: Sign::Positive, max_integer_digits: 9, max_scale: 10 };
/// Volumes in lots: `0 < volume < 1,000,000,000`, at most 8 decimal places.
pub const VOLUME: DecimalBounds =
    DecimalBounds { kind: "volume", sign: Sign::Positive, max_integer_digits: 9, max_scale: 8 };
/// Money in the account currency (balance, equity, margin, swap, commission, profit):
/// `|amount| < 1,000,000,000,000,000`, at most 8 decimal places.
pub const MONEY: DecimalBounds =
    DecimalBounds { kind: "amount", sign: Sign::Any, max_integer_digits: 15, max_scale: 8 };
/// Percentages (thresholds): `0 <= percent < 1000`, at most 4 decimal places.
pub const PERCENT: DecimalBounds =
    DecimalBounds { kind: "percentage", sign: Sign::NonNegative, max_integer_digits: 3, max_scale: 4 };

/// Why a decimal text was refused; the text is meant for a person and never repeats more than the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Not `-?digits(.digits)?`.
    Syntax,
    /// Too many digits after the point.
    Scale {
        /// Places given.
        given: usize,
        /// Places allowed.
        max: u32,
    },
    /// Too large in absolute value.
    Magnitude {
        /// Integer digits allowed.
        max_integer_digits: u32,
    },
    /// Zero or negative where a positive value is required, or negative where that is not allowed.
    Sign(Sign),
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::Syntax => {
                f.write_str("is not a decimal number like \"1234.56\" (digits, an optional '-' and '.', no exponent)")
            }
            DecimalError::Scale { given, max } => {
                write!(f, "has {given} decimal places; at most {max} are kept exactly, so it is refused, not rounded")
            }
            DecimalError::Magnitude { max_integer_digits } => {
                write!(
                    f,
                    "is too large: the absolute value must be below 1{}",
                    "0".repeat(*max_integer_digits as usize)
                )
            }
            DecimalError::Sign(Sign::Positive) => f.write_str("must be greater than zero"),
            DecimalError::Sign(Sign::NonNegative) => f.write_str("must not be negative"),
            DecimalError::Sign(Sign::Any) => f.write_str("has an invalid sign"),
        }
    }
}

impl DecimalBounds {
    /// Parses `text` strictly (optional '-', digits, optional '.' and digits) and checks it against the bounds.
    pub fn parse(&self, text: &str) -> Result<Decimal, DecimalError> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = match digits.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (digits, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(DecimalError::Syntax);
        }
        let scale = frac.map_or(0, str::len);
        if scale > self.max_scale as usize {
            return Err(DecimalError::Scale { given: scale, max: self.max_scale });
        }
        let significant_int = int.trim_start_matches('0').len();
        if significant_int > self.max_integer_digits as usize {
            return Err(DecimalError::Magnitude { max_integer_digits: self.max_integer_digits });
        }
        // At most 15 + 10 digits survive the checks above, inside rust_decimal's 28, so this parse is exact.
        let value = Decimal::from_str(text).map_err(|_| DecimalError::Syntax)?;
        self.check(value)?;
        Ok(value)
    }

    /// Checks an already-parsed value (used for values that did not come from text, e.g. configuration).
    pub fn check(&self, value: Decimal) -> Result<(), DecimalError> {
        if value.scale() > self.max_scale && value.normalize().scale() > self.max_scale {
            return Err(DecimalError::Scale { given: value.scale() as usize, max: self.max_scale });
        }
        if value.abs() >= limit(self.max_integer_digits) {
            return Err(DecimalError::Magnitude { max_integer_digits: self.max_integer_digits });
        }
        let sign_ok = match self.sign {
            Sign::Positive => value > Decimal::ZERO,
            Sign::NonNegative => value >= Decimal::ZERO,
            Sign::Any => true,
        };
        if sign_ok { Ok(()) } else { Err(DecimalError::Sign(self.sign)) }
    }
}

/// `10^digits` (digits <= 28).
fn limit(digits: u32) -> Decimal {
    Decimal::from_i128_with_scale(10i128.pow(digits.min(28)), 0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn plain_decimals_within_bounds_parse_exactly() {
        assert_eq!(PRICE.parse("2350.10"), Ok(dec!(2350.10)));
        assert_eq!(PRICE.parse("2350.10").unwrap().to_string(), "2350.10", "the scale as written is kept");
        assert_eq!(PRICE.parse("0.0000000001"), Ok(dec!(0.0000000001)));
        assert_eq!(PRICE.parse("999999999.9999999999"), Ok(dec!(999999999.9999999999)));
        assert_eq!(MONEY.parse("-12.5"), Ok(dec!(-12.5)));
        assert_eq!(MONEY.parse("0"), Ok(Decimal::ZERO));
        assert_eq!(VOLUME.parse("000001.5"), Ok(dec!(1.5)), "leading zeros are not significant");
    }

    #[test]
    fn bad_syntax_is_refused() {
        for bad in ["", "-", ".5", "5.", "1e3", "+1", " 1", "1,000", "NaN", "1.2.3", "--1", "0x10", "1_000"] {
            assert_eq!(MONEY.parse(bad), Err(DecimalError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn more_places_than_kept_are_refused_not_rounded() {
        let forty_ones = format!("0.{}", "1".repeat(40));
        assert_eq!(PRICE.parse(&forty_ones), Err(DecimalError::Scale { given: 40, max: 10 }));
        assert_eq!(VOLUME.parse("1.000000001"), Err(DecimalError::Scale { given: 9, max: 8 }));
        assert_eq!(MONEY.parse("1.123456789"), Err(DecimalError::Scale { given: 9, max: 8 }));
    }

    #[test]
    fn magnitudes_at_or_over_the_limit_are_refused() {
        assert_eq!(PRICE.parse("1000000000"), Err(DecimalError::Magnitude { max_integer_digits: 9 }));
        assert_eq!(
            PRICE.parse("40000000000000000000000000000"),
            Err(DecimalError::Magnitude { max_integer_digits: 9 })
        );
        assert_eq!(MONEY.parse("-1000000000000000"), Err(DecimalError::Magnitude { max_integer_digits: 15 }));
        assert!(MONEY.parse("-999999999999999.99999999").is_ok());
    }

    #[test]
    fn signs_follow_the_kind() {
        assert_eq!(PRICE.parse("0"), Err(DecimalError::Sign(Sign::Positive)));
        assert_eq!(PRICE.parse("-0.00"), Err(DecimalError::Sign(Sign::Positive)));
        assert_eq!(VOLUME.parse("-1"), Err(DecimalError::Sign(Sign::Positive)));
        assert_eq!(PERCENT.parse("-1"), Err(DecimalError::Sign(Sign::NonNegative)));
        assert_eq!(PERCENT.parse("0"), Ok(Decimal::ZERO));
    }

    #[test]
    fn error_texts_say_what_to_do() {
        assert_eq!(
            DecimalError::Scale { given: 12, max: 10 }.to_string(),
            "has 12 decimal places; at most 10 are kept exactly, so it is refused, not rounded"
        );
        assert_eq!(
            DecimalError::Magnitude { max_integer_digits: 9 }.to_string(),
            "is too large: the absolute value must be below 1000000000"
        );
    }

    proptest! {
        #[test]
        fn any_text_is_either_refused_or_parsed_within_bounds(text in "-?[0-9]{0,32}(\\.[0-9]{0,32})?") {
            for bounds in [PRICE, VOLUME, MONEY, PERCENT] {
                if let Ok(v) = bounds.parse(&text) {
                    prop_assert!(v.abs() < limit(bounds.max_integer_digits));
                    prop_assert!(v.scale() <= bounds.max_scale);
                    // Exact: the value prints back to a text that parses to the same value.
                    prop_assert_eq!(bounds.parse(&v.to_string()), Ok(v));
                }
            }
        }
    }
}
