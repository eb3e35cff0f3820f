//! Small value types shared by the rules: sides, symbols, divergence kinds, close reasons.

use std::fmt;

use rust_decimal::Decimal;

/// A stored enumeration value that is not one of the known ones (a schema/code mismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseEnumError {
    /// Which enumeration.
    pub kind: &'static str,
    /// The value that did not parse.
    pub value: String,
}

/// Declares a fieldless enum with its lower-case storage names, `as_str` and `FromStr`.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        /// Ordered by declaration, so levels compare by severity.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lower-case name stored in PostgreSQL.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::ParseEnumError { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }

        // As the stored name, in every format (PostgreSQL JSON, the cache's binary encoding).
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use stored_enum;

stored_enum!(
    /// Direction of a position.
    Side, "side" {
        /// Long: gains when the price rises.
        Buy => "buy",
        /// Short: gains when the price falls.
        Sell => "sell",
    }
);

impl Side {
    /// +1 for a buy, -1 for a sell: the sign of P&L for a price rise.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

stored_enum!(
    /// What differs between a broker position and the platform's record of it.
    DivergenceKind, "divergence kind" {
        /// The entry prices differ beyond tolerance.
        EntrySlippage => "entry_slippage",
        /// The volumes differ beyond tolerance.
        VolumeMismatch => "volume_mismatch",
        /// The take-profit levels differ.
        TakeProfitMismatch => "take_profit_mismatch",
        /// The stop-loss levels differ.
        StopLossMismatch => "stop_loss_mismatch",
        /// One side bought what the other sold.
        SideMismatch => "side_mismatch",
        /// At the broker, unknown to the platform.
        BrokerOnly => "broker_only",
        /// On the platform, not at the broker.
        MissingAtBroker => "missing_at_broker",
    }
);

stored_enum!(
    /// Why a position was closed.
    CloseReason, "close reason" {
        /// Left the broker while the platform still believed it open.
        ClosedAtBroker => "closed_at_broker",
        /// Left the broker and the platform no longer listed it either.
        ClosedByPlatform => "closed_by_platform",
    }
);

/// Why a symbol was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1-20 characters of A-Z, 0-9, '.' or '_'")]
pub struct SymbolError;

/// An instrument symbol: 1-20 characters of `A-Z0-9._`, e.g. `XAUUSD` or `US30.CASH` (upper case only).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    /// Validates and wraps a symbol.
    pub fn parse(s: &str) -> Result<Self, SymbolError> {
        let valid_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.' || c == '_';
        if (1..=20).contains(&s.len()) && s.chars().all(valid_char) {
            Ok(Symbol(s.to_owned()))
        } else {
            Err(SymbolError)
        }
    }

    /// The symbol text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_accept_the_documented_alphabet_only() {
        for ok in ["XAUUSD", "BTCUSD", "US30.CASH", "EUR_USD", "A", "ABCDEFGHIJ0123456789"] {
            assert!(Symbol::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "xauusd", "XAU USD", "XAU-USD", "ABCDEFGHIJ01234567890", "ÉUR"] {
            assert_eq!(Symbol::parse(bad), Err(SymbolError), "{bad}");
        }
    }

    #[test]
    fn stored_names_round_trip() {
        for kind in DivergenceKind::ALL {
            assert_eq!(kind.as_str().parse::<DivergenceKind>(), Ok(*kind));
        }
        for side in Side::ALL {
            assert_eq!(side.as_str().parse::<Side>(), Ok(*side));
        }
        assert!("long".parse::<Side>().is_err());
    }

    #[test]
    fn side_sign_and_opposite() {
        assert_eq!(Side::Buy.sign(), Decimal::ONE);
        assert_eq!(Side::Sell.sign(), Decimal::NEGATIVE_ONE);
        assert_eq!(Side::Buy.opposite(), Side::Sell);
    }
}
