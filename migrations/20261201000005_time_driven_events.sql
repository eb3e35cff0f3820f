-- Time-driven changes recorded as events (issue 10): a held symbol's quote going stale, and a CRITICAL
-- account's pre-liquidation countdown running out, were only computed at read time, so nobody watching the
-- log heard of them. A per-replica clock now records them, once, whichever replica gets there first.

-- The pre-liquidation countdown ran out (event_type 'liquidation_due').
ALTER TABLE events DROP CONSTRAINT events_event_type_check;
ALTER TABLE events ADD CONSTRAINT events_event_type_check CHECK (event_type IN ('sync_completed', 'sync_failed',
    'position_opened', 'position_closed', 'divergence_detected', 'divergence_resolved', 'drawdown_level_changed',
    'market_alert_raised', 'market_alert_cleared', 'liquidation_due')) NOT VALID;
ALTER TABLE events VALIDATE CONSTRAINT events_event_type_check;

-- The drawdown_level_since of the CRITICAL spell whose countdown was already recorded as run out: a spell is
-- announced once (a new spell has a new drawdown_level_since).
ALTER TABLE accounts ADD COLUMN liquidation_due_since TIMESTAMPTZ;
-- Spells already CRITICAL when this migration runs count as announced: their countdown ran out before there was
-- anybody to tell, and a "close all now" for a spell days old would mislead.
UPDATE accounts SET liquidation_due_since = drawdown_level_since WHERE drawdown_level = 'critical';
-- The clock's scan: CRITICAL accounts only.
CREATE INDEX accounts_critical ON accounts (drawdown_level_since) WHERE drawdown_level = 'critical';

-- Symbols whose latest quote went stale, and the quote that did (NULL: a held symbol never quoted): set by the
-- clock (raising a stale_quote alert event for the holders), removed by the next fresh quote (clearing it).
CREATE TABLE stale_quotes (
    symbol      TEXT PRIMARY KEY REFERENCES instruments (symbol),
    quote_time  TIMESTAMPTZ,
    noted_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
