-- Hardening (issue 7): the decimal bounds the API enforces, mirrored as CHECK constraints so no stored value can
-- be out of range whatever writes it; superseded syncs; server-clock times for market alerts.
--
-- Bounds (src/domain/bounds.rs, stated in the proto comments):
--   prices   0 < x < 1e9,  at most 10 decimal places
--   volumes  0 < x < 1e9,  at most 8 decimal places
--   money    |x| < 1e15,   at most 8 decimal places
--   percent  0 <= x < 1000, at most 4 decimal places
-- CHECKs rather than NUMERIC(p, s): NUMERIC(p, s) would pad every value to s places ("2350.10" would come back
-- as "2350.1000000000"), and the service echoes values exactly as they were sent.

ALTER TABLE accounts
    DROP CONSTRAINT accounts_peak_equity_check,
    ADD CONSTRAINT accounts_money_bounds CHECK (
        (balance IS NULL OR (abs(balance) < 1e15 AND scale(balance) <= 8))
        AND (equity IS NULL OR (abs(equity) < 1e15 AND scale(equity) <= 8))
        AND (margin IS NULL OR (abs(margin) < 1e15 AND scale(margin) <= 8))
        -- the high-water mark is the largest equity seen, which may be negative (an account in deficit)
        AND (peak_equity IS NULL OR (abs(peak_equity) < 1e15 AND scale(peak_equity) <= 8))
        AND (min_equity IS NULL OR (min_equity < 1e15 AND scale(min_equity) <= 8))),
    ADD CONSTRAINT accounts_percent_bounds CHECK (
        (warning_drawdown_pct IS NULL OR scale(warning_drawdown_pct) <= 4)
        AND (max_drawdown_pct IS NULL OR scale(max_drawdown_pct) <= 4));

ALTER TABLE syncs
    DROP CONSTRAINT syncs_status_check,
    -- superseded: recorded, but older than the snapshot already applied, so it changed nothing.
    ADD CONSTRAINT syncs_status_check CHECK (status IN ('completed', 'failed', 'superseded')),
    ADD CONSTRAINT syncs_money_bounds CHECK (
        (balance IS NULL OR (abs(balance) < 1e15 AND scale(balance) <= 8))
        AND (equity IS NULL OR (abs(equity) < 1e15 AND scale(equity) <= 8))
        AND (margin IS NULL OR (abs(margin) < 1e15 AND scale(margin) <= 8)));

ALTER TABLE instruments
    ADD CONSTRAINT instruments_bounds CHECK (
        contract_size < 1e9 AND scale(contract_size) <= 8 AND tick_size < 1e9 AND scale(tick_size) <= 10);

ALTER TABLE positions
    ADD CONSTRAINT positions_bounds CHECK (
        volume < 1e9 AND scale(volume) <= 8
        AND open_price < 1e9 AND scale(open_price) <= 10
        AND current_price < 1e9 AND scale(current_price) <= 10
        AND (take_profit IS NULL OR (take_profit > 0 AND take_profit < 1e9 AND scale(take_profit) <= 10))
        AND (stop_loss IS NULL OR (stop_loss > 0 AND stop_loss < 1e9 AND scale(stop_loss) <= 10))
        AND (swap IS NULL OR (abs(swap) < 1e15 AND scale(swap) <= 8))
        AND (commission IS NULL OR (abs(commission) < 1e15 AND scale(commission) <= 8))
        AND (profit IS NULL OR (abs(profit) < 1e15 AND scale(profit) <= 8)));

ALTER TABLE platform_positions
    ADD CONSTRAINT platform_positions_bounds CHECK (
        volume < 1e9 AND scale(volume) <= 8
        AND entry_price < 1e9 AND scale(entry_price) <= 10
        AND (take_profit IS NULL OR (take_profit > 0 AND take_profit < 1e9 AND scale(take_profit) <= 10))
        AND (stop_loss IS NULL OR (stop_loss > 0 AND stop_loss < 1e9 AND scale(stop_loss) <= 10)));

ALTER TABLE latest_quotes
    ADD CONSTRAINT latest_quotes_bounds CHECK (ask < 1e9 AND scale(bid) <= 10 AND scale(ask) <= 10);

ALTER TABLE candle_closes
    ADD CONSTRAINT candle_closes_bounds CHECK (
        previous_close < 1e9 AND scale(previous_close) <= 10 AND open < 1e9 AND scale(open) <= 10);

-- raised_at / cleared_at are the server's clock; observed_at keeps the reported quote or candle time that
-- raised the alert (NULL for alerts raised before this migration).
ALTER TABLE market_alerts ADD COLUMN observed_at TIMESTAMPTZ;
