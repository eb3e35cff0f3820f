//! Unrealized profit and loss of an open position, in the account currency.
//!
//! Broker-reported profit + swap + commission wins when the broker reported a profit. Otherwise
//! `side x (current - entry) x volume x contract_size` in the quote currency, converted with the latest quote of
//! a currency pair linking the quote currency and the account currency. When neither works the value is absent
//! with a reason: never a guess (the prototype used `delta x volume x 100` for every symbol).

use std::collections::HashMap;

use rust_decimal::{Decimal, RoundingStrategy};

use super::Side;

/// Decimal places of P&L values in the account currency.
pub const MONEY_DP: u32 = 2;
/// Decimal places of percentages.
pub const PERCENT_DP: u32 = 4;

/// What the P&L of one position depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionFigures {
    /// Direction.
    pub side: Side,
    /// Lots.
    pub volume: Decimal,
    /// Entry price (quote currency).
    pub entry_price: Decimal,
    /// Latest price (quote currency).
    pub current_price: Decimal,
    /// Broker-reported floating profit (account currency), if reported.
    pub broker_profit: Option<Decimal>,
    /// Broker-reported swap (account currency), if reported.
    pub swap: Option<Decimal>,
    /// Broker-reported commission (account currency), if reported.
    pub commission: Option<Decimal>,
}

/// The instrument facts P&L needs.
#[derive(Debug, Clone, PartialEq)]
pub struct InstrumentSpec {
    /// Units per lot.
    pub contract_size: Decimal,
    /// Currency prices are quoted in.
    pub quote_currency: String,
}

/// Mid prices of currency pairs, keyed by (base, quote): `rate(("GBP", "USD")) = 1.27` means 1 GBP = 1.27 USD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FxRates(HashMap<(String, String), Decimal>);

impl FxRates {
    /// Records the mid price of a pair; non-positive prices are ignored (they cannot convert anything).
    pub fn insert(&mut self, base: &str, quote: &str, mid: Decimal) {
        if mid > Decimal::ZERO {
            self.0.insert((base.to_owned(), quote.to_owned()), mid);
        }
    }

    /// Records a pair from its bid and ask: the mid `(bid + ask) / 2`, if it can be computed.
    pub fn insert_quote(&mut self, base: &str, quote: &str, bid: Decimal, ask: Decimal) {
        if let Some(mid) = bid.checked_add(ask).and_then(|sum| sum.checked_div(Decimal::TWO)) {
            self.insert(base, quote, mid);
        }
    }

    /// How many units of `to` one unit of `from` is worth, directly or through the inverse pair.
    pub fn rate(&self, from: &str, to: &str) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        if let Some(direct) = self.0.get(&(from.to_owned(), to.to_owned())) {
            return Some(*direct);
        }
        self.0.get(&(to.to_owned(), from.to_owned())).and_then(|inverse| Decimal::ONE.checked_div(*inverse))
    }
}

/// Where a P&L value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PnlSource {
    /// Broker profit + swap + commission.
    BrokerReported,
    /// Computed from prices, contract size and an FX rate.
    Computed,
}

/// The valuation of one position.
#[derive(Debug, Clone, PartialEq)]
pub enum Valuation {
    /// P&L is known.
    Known {
        /// Unrealized P&L in the account currency, rounded to [`MONEY_DP`].
        pnl: Decimal,
        /// How it was obtained.
        source: PnlSource,
        /// P&L as a percentage of the entry notional in the account currency; absent when the notional cannot be
        /// converted.
        percent: Option<Decimal>,
    },
    /// P&L could not be determined.
    Unavailable {
        /// Why, for a person.
        reason: String,
    },
}

/// Values one position for an account in `account_currency`. `instrument` is `None` for a symbol this service
/// does not know.
pub fn value_position(
    position: &PositionFigures,
    instrument: Option<&InstrumentSpec>,
    account_currency: &str,
    rates: &FxRates,
) -> Valuation {
    let to_account = instrument.and_then(|i| rates.rate(&i.quote_currency, account_currency));
    let notional = match (instrument, to_account) {
        (Some(i), Some(rate)) => checked_product(&[position.entry_price, position.volume, i.contract_size, rate]),
        _ => None,
    };

    let (pnl, source) = if let Some(profit) = position.broker_profit {
        let total = profit
            .checked_add(position.swap.unwrap_or_default())
            .and_then(|t| t.checked_add(position.commission.unwrap_or_default()));
        let Some(total) = total else { return overflow() };
        (total, PnlSource::BrokerReported)
    } else {
        let Some(instrument) = instrument else {
            return Valuation::Unavailable {
                reason: "no broker-reported profit and the instrument is unknown (no contract size)".to_owned(),
            };
        };
        let Some(rate) = to_account else {
            return Valuation::Unavailable {
                reason: format!(
                    "no broker-reported profit and no quote to convert {} to {}",
                    instrument.quote_currency, account_currency
                ),
            };
        };
        let pnl = position.current_price.checked_sub(position.entry_price).and_then(|delta| {
            checked_product(&[position.side.sign(), delta, position.volume, instrument.contract_size, rate])
        });
        let Some(pnl) = pnl else { return overflow() };
        (pnl, PnlSource::Computed)
    };

    let pnl = round_money(pnl);
    let percent = notional
        .filter(|n| !n.is_zero())
        .and_then(|n| pnl.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(n))
        .map(round_percent);
    Valuation::Known { pnl, source, percent }
}

fn overflow() -> Valuation {
    Valuation::Unavailable { reason: "P&L overflows the decimal range".to_owned() }
}

/// The sum of P&L values, if it stays in range.
pub fn checked_sum(values: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    values.into_iter().try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v))
}

/// `part / whole x 100`, rounded to [`PERCENT_DP`]; `None` when `whole` is not positive.
pub fn percent_of(part: Decimal, whole: Decimal) -> Option<Decimal> {
    if whole <= Decimal::ZERO {
        return None;
    }
    part.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(whole).map(round_percent)
}

/// Rounds money to [`MONEY_DP`] places, half away from zero.
pub fn round_money(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(MONEY_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// Rounds a percentage to [`PERCENT_DP`] places, half away from zero.
pub fn round_percent(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(PERCENT_DP, RoundingStrategy::MidpointAwayFromZero)
}

fn checked_product(factors: &[Decimal]) -> Option<Decimal> {
    factors.iter().try_fold(Decimal::ONE, |acc, f| acc.checked_mul(*f))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    fn xauusd() -> InstrumentSpec {
        InstrumentSpec { contract_size: dec!(100), quote_currency: "USD".into() }
    }

    fn gold_buy() -> PositionFigures {
        PositionFigures {
            side: Side::Buy,
            volume: dec!(0.5),
            entry_price: dec!(2350.00),
            current_price: dec!(2360.50),
            broker_profit: None,
            swap: None,
            commission: None,
        }
    }

    fn rates() -> FxRates {
        let mut r = FxRates::default();
        r.insert("GBP", "USD", dec!(1.25));
        r.insert("EUR", "USD", dec!(1.08));
        r
    }

    #[test]
    fn broker_reported_profit_swap_and_commission_are_summed() {
        let p = PositionFigures {
            broker_profit: Some(dec!(410.20)),
            swap: Some(dec!(-3.10)),
            commission: Some(dec!(-7.00)),
            ..gold_buy()
        };
        let v = value_position(&p, Some(&xauusd()), "USD", &rates());
        assert_eq!(
            v,
            Valuation::Known {
                pnl: dec!(400.10),
                source: PnlSource::BrokerReported,
                // notional 2350 x 0.5 x 100 = 117500 USD
                percent: Some(dec!(0.3405)),
            }
        );
    }

    #[test]
    fn computed_pnl_uses_the_contract_size_and_converts_through_the_inverse_pair() {
        // 10.50 x 0.5 lots x 100 oz = 525 USD = 420 GBP at GBPUSD 1.25.
        let v = value_position(&gold_buy(), Some(&xauusd()), "GBP", &rates());
        let Valuation::Known { pnl, source, percent } = v else { panic!("{v:?}") };
        assert_eq!((pnl, source), (dec!(420.00), PnlSource::Computed));
        // 525 / 117500 x 100
        assert_eq!(percent, Some(dec!(0.4468)));
    }

    #[test]
    fn computed_pnl_in_the_quote_currency_needs_no_quote() {
        let v = value_position(&gold_buy(), Some(&xauusd()), "USD", &FxRates::default());
        assert!(matches!(v, Valuation::Known { pnl, .. } if pnl == dec!(525.00)));
    }

    #[test]
    fn a_missing_conversion_makes_pnl_unavailable_with_a_reason() {
        let v = value_position(&gold_buy(), Some(&xauusd()), "CHF", &rates());
        assert_eq!(
            v,
            Valuation::Unavailable { reason: "no broker-reported profit and no quote to convert USD to CHF".into() }
        );
    }

    #[test]
    fn an_unknown_instrument_without_broker_profit_is_unavailable() {
        let v = value_position(&gold_buy(), None, "USD", &rates());
        assert!(matches!(v, Valuation::Unavailable { .. }));
    }

    #[test]
    fn broker_profit_of_an_unknown_instrument_is_known_without_percent() {
        let p = PositionFigures { broker_profit: Some(dec!(12.34)), ..gold_buy() };
        let v = value_position(&p, None, "USD", &rates());
        assert_eq!(v, Valuation::Known { pnl: dec!(12.34), source: PnlSource::BrokerReported, percent: None });
    }

    #[test]
    fn direct_pair_rates_multiply() {
        // EURUSD position P&L in USD for an account in... USD->EUR via EURUSD inverse; EUR->USD direct.
        assert_eq!(rates().rate("EUR", "USD"), Some(dec!(1.08)));
        assert_eq!(rates().rate("USD", "USD"), Some(Decimal::ONE));
        assert_eq!(rates().rate("JPY", "USD"), None);
    }

    #[test]
    fn percent_of_a_non_positive_whole_is_absent() {
        assert_eq!(percent_of(dec!(10), dec!(0)), None);
        assert_eq!(percent_of(dec!(10), dec!(-5)), None);
        assert_eq!(percent_of(dec!(25), dec!(200)), Some(dec!(12.5)));
    }

    fn decimal(lo: i64, hi: i64, scale: u32) -> impl Strategy<Value = Decimal> {
        (lo..hi).prop_map(move |n| Decimal::new(n, scale))
    }

    proptest! {
        #[test]
        fn pnl_sign_flips_with_side(
            entry in decimal(1, 10_000_000, 3),
            current in decimal(1, 10_000_000, 3),
            volume in decimal(1, 10_000, 2),
        ) {
            let buy = PositionFigures { entry_price: entry, current_price: current, volume, ..gold_buy() };
            let sell = PositionFigures { side: Side::Sell, ..buy.clone() };
            let value = |p: &PositionFigures| match value_position(p, Some(&xauusd()), "USD", &rates()) {
                Valuation::Known { pnl, .. } => pnl,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(value(&buy), -value(&sell));
            prop_assert_eq!(value(&buy) > Decimal::ZERO, current > entry);
        }
    }
}
