//! Pure domain rules: reconciliation state, P&L, drawdown and market guards. No I/O and no generated types, so
//! every rule is unit-testable on its own.

pub mod bounds;
pub mod drawdown;
pub mod events;
pub mod market;
pub mod matching;
#[cfg(test)]
mod no_panic;
pub mod pnl;
pub mod reconcile;
pub mod rules;
pub mod status;
mod types;

pub use rules::Rules;
pub use types::{CloseReason, DivergenceKind, ParseEnumError, Side, Symbol, SymbolError};
