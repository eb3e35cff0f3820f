-- trading-monitor schema: accounts, instruments, syncs, positions, platform positions, divergences,
-- the append-only event log, per-user reconciliation summaries, quotes, candles and market alerts.
--
-- Conventions: money, prices and volumes are NUMERIC (exact); times are TIMESTAMPTZ (UTC); enumerations are
-- lower-case TEXT with a CHECK constraint (readable in psql, no type juggling in clients). Every read path has an
-- index; status reads never count history (see reconciliation_summaries).

-- One trading account per user (v1). Holds the last broker snapshot and the drawdown guard state.
CREATE TABLE accounts (
    user_id               UUID PRIMARY KEY,
    -- ISO 4217, set at the first successful sync.
    currency              TEXT CHECK (currency ~ '^[A-Z]{3}$'),
    balance               NUMERIC,
    equity                NUMERIC,
    margin                NUMERIC,
    -- finish time of the sync that reported balance/equity.
    equity_time           TIMESTAMPTZ,
    -- equity high-water mark: only ever raised, atomically, by a sync.
    peak_equity           NUMERIC CHECK (peak_equity IS NULL OR peak_equity >= 0),
    drawdown_level        TEXT NOT NULL DEFAULT 'unknown'
                          CHECK (drawdown_level IN ('unknown', 'normal', 'warning', 'critical')),
    drawdown_level_since  TIMESTAMPTZ,
    -- per-account guard overrides; NULL means the service defaults.
    warning_drawdown_pct  NUMERIC CHECK (warning_drawdown_pct > 0 AND warning_drawdown_pct <= 100),
    max_drawdown_pct      NUMERIC CHECK (max_drawdown_pct > 0 AND max_drawdown_pct <= 100),
    min_equity            NUMERIC CHECK (min_equity >= 0),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Counters and latest state per user, updated in the same transaction as every sync, so status reads are O(1)
-- whatever the length of the history.
CREATE TABLE reconciliation_summaries (
    user_id                  UUID PRIMARY KEY REFERENCES accounts (user_id),
    total_syncs              BIGINT NOT NULL DEFAULT 0 CHECK (total_syncs >= 0),
    failed_syncs             BIGINT NOT NULL DEFAULT 0 CHECK (failed_syncs >= 0),
    last_sync_id             UUID,
    last_sync_status         TEXT CHECK (last_sync_status IN ('completed', 'failed')),
    last_sync_started_at     TIMESTAMPTZ,
    last_sync_finished_at    TIMESTAMPTZ,
    last_sync_error          TEXT,
    last_success_at          TIMESTAMPTZ,
    open_positions_count     INTEGER NOT NULL DEFAULT 0 CHECK (open_positions_count >= 0),
    matched_positions_count  INTEGER NOT NULL DEFAULT 0 CHECK (matched_positions_count >= 0),
    open_divergences_count   INTEGER NOT NULL DEFAULT 0 CHECK (open_divergences_count >= 0),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Tradable instruments: contract size turns lots into units; base/quote currencies drive FX conversion.
CREATE TABLE instruments (
    symbol          TEXT PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9._]{1,20}$'),
    contract_size   NUMERIC NOT NULL CHECK (contract_size > 0),
    -- the priced asset (a currency for FX pairs, XAU/BTC/... otherwise).
    base_currency   TEXT NOT NULL CHECK (base_currency ~ '^[A-Z0-9]{3,10}$'),
    quote_currency  TEXT NOT NULL CHECK (quote_currency ~ '^[A-Z]{3}$'),
    tick_size       NUMERIC NOT NULL CHECK (tick_size > 0),
    description     TEXT NOT NULL DEFAULT '',
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO instruments (symbol, contract_size, base_currency, quote_currency, tick_size, description) VALUES
    ('XAUUSD', 100,    'XAU', 'USD', 0.01,    'Gold vs US dollar'),
    ('XAGUSD', 5000,   'XAG', 'USD', 0.001,   'Silver vs US dollar'),
    ('EURUSD', 100000, 'EUR', 'USD', 0.00001, 'Euro vs US dollar'),
    ('GBPUSD', 100000, 'GBP', 'USD', 0.00001, 'Pound sterling vs US dollar'),
    ('AUDUSD', 100000, 'AUD', 'USD', 0.00001, 'Australian dollar vs US dollar'),
    ('NZDUSD', 100000, 'NZD', 'USD', 0.00001, 'New Zealand dollar vs US dollar'),
    ('USDJPY', 100000, 'USD', 'JPY', 0.001,   'US dollar vs Japanese yen'),
    ('USDCHF', 100000, 'USD', 'CHF', 0.00001, 'US dollar vs Swiss franc'),
    ('USDCAD', 100000, 'USD', 'CAD', 0.00001, 'US dollar vs Canadian dollar'),
    ('EURGBP', 100000, 'EUR', 'GBP', 0.00001, 'Euro vs pound sterling'),
    ('EURJPY', 100000, 'EUR', 'JPY', 0.001,   'Euro vs Japanese yen'),
    ('GBPJPY', 100000, 'GBP', 'JPY', 0.001,   'Pound sterling vs Japanese yen'),
    ('BTCUSD', 1,      'BTC', 'USD', 0.01,    'Bitcoin vs US dollar'),
    ('ETHUSD', 1,      'ETH', 'USD', 0.01,    'Ether vs US dollar');

-- One row per submitted broker sync (successful or failed). request_id makes submission idempotent.
CREATE TABLE syncs (
    sync_id             UUID PRIMARY KEY,
    request_id          UUID NOT NULL UNIQUE,
    user_id             UUID NOT NULL REFERENCES accounts (user_id),
    status              TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    started_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ NOT NULL CHECK (finished_at >= started_at),
    error_message       TEXT,
    matched_count       INTEGER NOT NULL DEFAULT 0,
    divergence_count    INTEGER NOT NULL DEFAULT 0,
    broker_only_count   INTEGER NOT NULL DEFAULT 0,
    missing_count       INTEGER NOT NULL DEFAULT 0,
    balance             NUMERIC,
    equity              NUMERIC,
    margin              NUMERIC,
    -- the encoded response, returned verbatim when the same request_id is submitted again.
    response            BYTEA,
    committed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'failed') = (error_message IS NOT NULL))
);
CREATE INDEX syncs_by_user_time ON syncs (user_id, finished_at DESC);

-- Broker positions, tracked across syncs by the broker's stable position identifier. Closed positions are kept.
CREATE TABLE positions (
    position_id          UUID PRIMARY KEY,
    user_id              UUID NOT NULL REFERENCES accounts (user_id),
    position_identifier  TEXT NOT NULL,
    ticket               TEXT NOT NULL,
    symbol               TEXT NOT NULL,
    side                 TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    volume               NUMERIC NOT NULL CHECK (volume > 0),
    open_price           NUMERIC NOT NULL CHECK (open_price > 0),
    open_time            TIMESTAMPTZ NOT NULL,
    current_price        NUMERIC NOT NULL CHECK (current_price > 0),
    current_price_time   TIMESTAMPTZ NOT NULL,
    take_profit          NUMERIC,
    stop_loss            NUMERIC,
    swap                 NUMERIC,
    commission           NUMERIC,
    profit               NUMERIC,
    matched              BOOLEAN NOT NULL DEFAULT false,
    platform_trade_id    TEXT,
    status               TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    close_reason         TEXT CHECK (close_reason IN ('closed_at_broker', 'closed_by_platform')),
    closed_at            TIMESTAMPTZ,
    first_seen_sync_id   UUID,
    last_seen_sync_id    UUID,
    last_seen_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, position_identifier),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
-- ListOpenPositions (keyset on open_time, position_id), with and without a symbol.
CREATE INDEX positions_open_by_user ON positions (user_id, open_time, position_id) WHERE status = 'open';
CREATE INDEX positions_open_by_user_symbol ON positions (user_id, symbol, open_time, position_id)
    WHERE status = 'open';
-- Which users hold a symbol (quote ingest invalidation, market-alert fan-out).
CREATE INDEX positions_open_by_symbol ON positions (symbol, user_id) WHERE status = 'open';

-- What the platform believes is open, as of the last sync that reported it.
CREATE TABLE platform_positions (
    user_id              UUID NOT NULL REFERENCES accounts (user_id),
    platform_trade_id    TEXT NOT NULL,
    symbol               TEXT NOT NULL,
    side                 TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    volume               NUMERIC NOT NULL CHECK (volume > 0),
    entry_price          NUMERIC NOT NULL CHECK (entry_price > 0),
    take_profit          NUMERIC,
    stop_loss            NUMERIC,
    position_identifier  TEXT,
    last_seen_sync_id    UUID NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, platform_trade_id)
);

-- Divergences between broker and platform. Open while resolved_at IS NULL.
CREATE TABLE divergences (
    divergence_id        UUID PRIMARY KEY,
    user_id              UUID NOT NULL REFERENCES accounts (user_id),
    kind                 TEXT NOT NULL CHECK (kind IN ('entry_slippage', 'volume_mismatch', 'take_profit_mismatch',
                             'stop_loss_mismatch', 'side_mismatch', 'broker_only', 'missing_at_broker')),
    symbol               TEXT NOT NULL,
    position_id          UUID REFERENCES positions (position_id),
    position_identifier  TEXT,
    platform_trade_id    TEXT,
    broker_value         TEXT,
    platform_value       TEXT,
    difference_pct       NUMERIC,
    message              TEXT NOT NULL,
    detected_sync_id     UUID,
    detected_at          TIMESTAMPTZ NOT NULL,
    last_seen_sync_id    UUID,
    resolved_at          TIMESTAMPTZ,
    resolved_sync_id     UUID
);
-- One open divergence per (user, kind, broker side, platform side).
CREATE UNIQUE INDEX divergences_open_identity ON divergences
    (user_id, kind, COALESCE(position_identifier, ''), COALESCE(platform_trade_id, ''))
    WHERE resolved_at IS NULL;
CREATE INDEX divergences_open_by_position ON divergences (position_id) WHERE resolved_at IS NULL;

-- The append-only event log. event_id orders events inserted in the same instant.
CREATE TABLE events (
    event_id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      UUID NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type IN ('sync_completed', 'sync_failed', 'position_opened',
                     'position_closed', 'divergence_detected', 'divergence_resolved', 'drawdown_level_changed',
                     'market_alert_raised', 'market_alert_cleared')),
    occurred_at  TIMESTAMPTZ NOT NULL,
    sync_id      UUID,
    position_id  UUID,
    symbol       TEXT,
    message      TEXT NOT NULL,
    details      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object')
);
-- Recent events and unfiltered walks (newest first), and walks filtered by type.
CREATE INDEX events_by_user_time ON events (user_id, occurred_at DESC, event_id DESC);
CREATE INDEX events_by_user_type_time ON events (user_id, event_type, occurred_at DESC, event_id DESC);

-- Latest quote per symbol (what the guards and P&L read); history is not kept.
CREATE TABLE latest_quotes (
    symbol       TEXT PRIMARY KEY REFERENCES instruments (symbol),
    bid          NUMERIC NOT NULL CHECK (bid > 0),
    ask          NUMERIC NOT NULL CHECK (ask >= bid),
    quote_time   TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Candle closes: the previous candle's close and the new candle's open, for the price-gap guard.
CREATE TABLE candle_closes (
    symbol          TEXT NOT NULL REFERENCES instruments (symbol),
    open_time       TIMESTAMPTZ NOT NULL,
    previous_close  NUMERIC NOT NULL CHECK (previous_close > 0),
    open            NUMERIC NOT NULL CHECK (open > 0),
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, open_time)
);

-- Market-condition alerts per symbol (gap and spread; stale quotes are evaluated at read time).
-- Active while cleared_at IS NULL.
CREATE TABLE market_alerts (
    alert_id       UUID PRIMARY KEY,
    symbol         TEXT NOT NULL REFERENCES instruments (symbol),
    kind           TEXT NOT NULL CHECK (kind IN ('price_gap', 'wide_spread')),
    severity       TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    value_pct      NUMERIC NOT NULL,
    threshold_pct  NUMERIC NOT NULL,
    message        TEXT NOT NULL,
    raised_at      TIMESTAMPTZ NOT NULL,
    cleared_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX market_alerts_active ON market_alerts (symbol, kind) WHERE cleared_at IS NULL;
