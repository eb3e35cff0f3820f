//! `--watch-*`, `--clock-interval` and the HTTP/2 connection settings that carry watch streams.

use std::time::Duration;

use clap::Args;

use super::ConfigError;

/// Watch streams (WatchReconciliationEvents, WatchGuardStatus) and the connections that carry them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Watch streams and connections")]
pub struct WatchArgs {
    /// Heartbeat interval of a watch that does not ask for one: a silent stream gets a heartbeat (with a fresh
    /// resume token) this often, so proxies keep it open.
    #[arg(long, env = "TM_WATCH_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub watch_heartbeat: Duration,
    /// Watch streams one caller (a token's `sub`) may hold open on this replica; one more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TM_WATCH_MAX_PER_USER", default_value_t = 16)]
    pub watch_max_per_user: usize,
    /// Watch streams this replica holds open at most; one more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TM_WATCH_MAX_STREAMS", default_value_t = 5000)]
    pub watch_max_streams: usize,
    /// A watch whose client has not read for this long (its buffer full) is ended with RESOURCE_EXHAUSTED
    /// (reason SLOW_CONSUMER), so a stuck client holds bounded memory; it can resume without loss.
    #[arg(long, env = "TM_WATCH_SEND_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub watch_send_timeout: Duration,
    /// Messages buffered per watch before the client must read.
    #[arg(long, env = "TM_WATCH_BUFFER", default_value_t = 64)]
    pub watch_buffer: usize,
    /// Bytes of the most recent feed reads (their events, and the books of guard-watched accounts read with
    /// them) each replica keeps for its streams to apply; a stream that falls further behind reads the event log
    /// from PostgreSQL instead (it loses nothing, it costs a read). About 0.5–1 KB per event.
    #[arg(long, env = "TM_WATCH_BATCH_MEMORY", default_value_t = 32 * 1024 * 1024)]
    pub watch_batch_memory: usize,
    /// Reads of PostgreSQL that watch streams make themselves (catch-up pages of 500 events or of 500 accounts
    /// of an all-accounts snapshot, and the books of accounts they re-judge) at once on this replica; more wait
    /// their turn, so replays cannot take the database pool from other calls. Each page after a catch-up's
    /// first also costs its caller one call of its rate limit.
    #[arg(long, env = "TM_WATCH_CATCH_UP_CONCURRENCY", default_value_t = 4)]
    pub watch_catch_up_concurrency: usize,
    /// The event feed is re-read this often even without a wake-up (writes wake every replica's reader over the
    /// cache's Redis channel; a wake-up is only a hint), while this replica hears that channel; also how often
    /// heartbeat positions advance.
    #[arg(long, env = "TM_WATCH_SAFETY_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub watch_safety_interval: Duration,
    /// The event feed is re-read this often while this replica cannot hear other replicas' writes (Redis
    /// unreachable, or the cache disabled): how late a watcher here may learn of another replica's write then.
    #[arg(long, env = "TM_WATCH_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub watch_poll_interval: Duration,
    /// How often the clock records time-driven changes as events (a quote going stale, a liquidation countdown
    /// running out): the most they are late.
    #[arg(long, env = "TM_CLOCK_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub clock_interval: Duration,
    /// HTTP/2 keep-alive ping interval on idle connections (0 turns pings off).
    #[arg(long, env = "TM_HTTP2_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub http2_keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    #[arg(long, env = "TM_HTTP2_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub http2_keepalive_timeout: Duration,
    /// Connections are closed (gracefully, GOAWAY) after about this long (±10 %, drawn per replica), so clients
    /// spread over replicas again; watches then resume elsewhere (0: never).
    #[arg(long, env = "TM_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration, default_value = "30m")]
    pub max_connection_age: Duration,
    /// How long calls on an aged-out connection may still run before it is closed.
    #[arg(long, env = "TM_MAX_CONNECTION_AGE_GRACE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_connection_age_grace: Duration,
}

impl WatchArgs {
    /// The hub's settings (the feed reader behind every watch stream).
    pub fn hub_settings(&self) -> Result<crate::feed::HubSettings, ConfigError> {
        Ok(crate::feed::HubSettings {
            safety_interval: nonzero(self.watch_safety_interval, "--watch-safety-interval")?,
            poll_interval: nonzero(self.watch_poll_interval, "--watch-poll-interval")?,
            // Batches a stream may fall behind before it re-reads from the table instead. What they hold is
            // bounded by `batch_memory`, not by this.
            capacity: 256,
            batch_memory: self.watch_batch_memory,
            max_per_user: self.watch_max_per_user,
            max_streams: self.watch_max_streams,
        })
    }

    /// How each watch stream behaves.
    pub fn stream_settings(&self) -> Result<crate::services::StreamSettings, ConfigError> {
        Ok(crate::services::StreamSettings {
            heartbeat: nonzero(self.watch_heartbeat, "--watch-heartbeat")?,
            send_timeout: nonzero(self.watch_send_timeout, "--watch-send-timeout")?,
            buffer: self.watch_buffer,
            catch_up_concurrency: positive(self.watch_catch_up_concurrency, "--watch-catch-up-concurrency")?,
        })
    }

    /// How often the clock records time-driven changes.
    pub fn clock_interval(&self) -> Result<Duration, ConfigError> {
        nonzero(self.clock_interval, "--clock-interval")
    }
}

fn positive(value: usize, name: &str) -> Result<usize, ConfigError> {
    if value == 0 { Err(ConfigError(format!("{name} must be at least 1"))) } else { Ok(value) }
}

fn nonzero(value: Duration, name: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() { Err(ConfigError(format!("{name} must be longer than zero"))) } else { Ok(value) }
}
