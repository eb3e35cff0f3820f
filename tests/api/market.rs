//! Quotes and the market/drawdown guards.
