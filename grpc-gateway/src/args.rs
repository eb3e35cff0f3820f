//! The HTTP settings the standalone gateway and the in-process one (`trading-monitor serve --http-listen`) share:
//! their flags (`--http-*`, `TM_HTTP_*`), defaults, and the checks that turn a nonsense value into a clear
//! start-up error instead of a panic or a silent misbehaviour.

use std::time::Duration;

/// The longest any of the gateway's own timeouts may be set to (a day): far beyond any sensible value, and short
/// enough that adding it to the clock can never overflow.
pub const MAX_TIMEOUT_SETTING: Duration = Duration::from_secs(24 * 3600);
/// The most connections or streams a limit may be set to.
pub const MAX_COUNT_SETTING: u32 = 1_000_000;

/// HTTP settings shared by the standalone gateway and the in-process one (`trading-monitor serve`).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "REST gateway")]
pub struct HttpArgs {
    /// Origins allowed to call the API from a browser (CORS), comma-separated, e.g.
    /// `https://ops.example.com,http://localhost:3000`. Empty: no cross-origin access (same-origin pages, such as
    /// the status page, and non-browser clients are unaffected).
    #[arg(long = "http-cors-allow-origins", env = "TM_HTTP_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,
    /// Let cross-origin requests carry cookies or HTTP auth (`Access-Control-Allow-Credentials`). Not needed for
    /// bearer tokens sent by script.
    #[arg(long = "http-cors-allow-credentials", env = "TM_HTTP_CORS_ALLOW_CREDENTIALS", default_value_t = false)]
    pub cors_allow_credentials: bool,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long = "http-max-body-bytes", env = "TM_HTTP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Upper bound on a request's deadline: a longer `Grpc-Timeout`/`X-Request-Timeout` is cut to this, and a
    /// request without one gets it. A stream (SSE or NDJSON) must start within it too: the service has to
    /// accept the call by then, or the answer is 504.
    #[arg(long = "http-max-timeout", env = "TM_HTTP_MAX_TIMEOUT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub max_timeout: Duration,
    /// How long `/healthz` waits for the gRPC health service before answering 503.
    #[arg(long = "http-health-timeout", env = "TM_HTTP_HEALTH_TIMEOUT", value_parser = humantime::parse_duration, default_value = "2s")]
    pub health_timeout: Duration,
    /// A client that has taken nothing for this long while the gateway had something for it (its connection's
    /// buffers are full: a stalled or vanished client) is disconnected, whatever it was sent: a stream (Server-Sent
    /// Events, NDJSON) or any other response. A stream also ends, and its call to the service is cancelled, when its
    /// next message has waited this long for the client, so a stuck client holds neither memory nor, standalone,
    /// the upstream connection's flow-control window for ever. The client sees the response cut off; a
    /// reconnecting `EventSource` resumes from its `Last-Event-ID`.
    #[arg(long = "http-send-timeout", env = "TM_HTTP_SEND_TIMEOUT", value_parser = timeout, default_value = "30s")]
    pub send_timeout: Duration,
    /// Streams (Server-Sent Events or NDJSON responses) this gateway serves at once. One more is refused at once
    /// with 429 (`RESOURCE_EXHAUSTED`, reason `TOO_MANY_STREAMS`, `Retry-After: 1`), never queued. Standalone,
    /// keep it at or below `--upstream-stream-connections` × the service's `--max-streams-per-connection`.
    #[arg(long = "http-max-streams", env = "TM_HTTP_MAX_STREAMS", value_parser = count, default_value_t = 500)]
    pub max_streams: u32,
    /// TCP connections the HTTP listener keeps open at once. At the limit it stops accepting: further clients
    /// wait in the operating system's listen backlog (connect succeeds, the answer waits) until a connection
    /// closes, or time out on their side.
    #[arg(long = "http-max-connections", env = "TM_HTTP_MAX_CONNECTIONS", value_parser = count, default_value_t = 10_000)]
    pub max_connections: u32,
    /// How long a client may take to send a request's head (request line and headers), counted from its first
    /// byte, or from the connection's opening for its first request; a slower client is disconnected (a
    /// slowloris defence). A new connection must also send its first request, HTTP/1.1 or HTTP/2, within it.
    #[arg(long = "http-header-read-timeout", env = "TM_HTTP_HEADER_READ_TIMEOUT", value_parser = timeout, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight for this long is closed (HTTP/2: with a GOAWAY). Keep
    /// it above the idle timeout of any proxy or load balancer in front (often 60 s), or the proxy may reuse a
    /// connection just as the gateway closes it and answer 502.
    #[arg(long = "http-idle-timeout", env = "TM_HTTP_IDLE_TIMEOUT", value_parser = timeout, default_value = "90s")]
    pub idle_timeout: Duration,
}

impl Default for HttpArgs {
    fn default() -> Self {
        HttpArgs {
            cors_allow_origins: Vec::new(),
            cors_allow_credentials: false,
            max_body_bytes: 4 * 1024 * 1024,
            max_timeout: Duration::from_secs(15),
            health_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(30),
            max_streams: 500,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl HttpArgs {
    /// Checks the settings this module's parsers check, for settings built without the command line (`Default`,
    /// struct literals).
    pub fn validate(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--http-send-timeout", self.send_timeout),
            ("--http-header-read-timeout", self.header_read_timeout),
            ("--http-idle-timeout", self.idle_timeout),
        ] {
            check_timeout(value).map_err(|e| format!("{flag}: {e}"))?;
        }
        for (flag, value) in
            [("--http-max-streams", self.max_streams), ("--http-max-connections", self.max_connections)]
        {
            check_count(value).map_err(|e| format!("{flag}: {e}"))?;
        }
        Ok(())
    }
}

/// A duration flag of the gateway's own: `humantime` syntax (`500ms`, `30s`, `2m`), above zero, at most a day.
pub fn timeout(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 500ms, 30s, 2m)"))?;
    check_timeout(value)?;
    Ok(value)
}

/// A count flag: a whole number from 1 to [`MAX_COUNT_SETTING`].
pub fn count(text: &str) -> Result<u32, String> {
    let value =
        text.trim().parse::<u32>().map_err(|_| format!("expected a whole number from 1 to {MAX_COUNT_SETTING}"))?;
    check_count(value)?;
    Ok(value)
}

fn check_timeout(value: Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err("must be above zero".into());
    }
    if value > MAX_TIMEOUT_SETTING {
        return Err("must be at most 24h".into());
    }
    Ok(())
}

fn check_count(value: u32) -> Result<(), String> {
    if !(1..=MAX_COUNT_SETTING).contains(&value) {
        return Err(format!("must be from 1 to {MAX_COUNT_SETTING}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        http: HttpArgs,
    }

    fn parse(args: &[&str]) -> Result<HttpArgs, String> {
        let argv = std::iter::once("gw").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.http).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_command_line_and_are_valid() {
        let parsed = parse(&[]).unwrap();
        let default = HttpArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        default.validate().unwrap();
    }

    #[test]
    fn zero_and_nonsense_values_are_refused_with_the_flag_named() {
        for (flag, bad) in [
            ("--http-send-timeout", "0s"),
            ("--http-header-read-timeout", "0ms"),
            ("--http-idle-timeout", "soon"),
            ("--http-idle-timeout", "1000years"),
            ("--http-max-streams", "0"),
            ("--http-max-streams", "-1"),
            ("--http-max-connections", "0"),
            ("--http-max-connections", "99999999999"),
        ] {
            let error = parse(&[&format!("{flag}={bad}")]).expect_err(&format!("{flag}={bad} is refused"));
            assert!(error.contains(flag), "{error}");
        }
        let args = parse(&["--http-max-streams", "3", "--http-send-timeout", "250ms"]).unwrap();
        assert_eq!((args.max_streams, args.send_timeout), (3, Duration::from_millis(250)));
        let built = HttpArgs { idle_timeout: Duration::ZERO, ..HttpArgs::default() };
        assert!(built.validate().unwrap_err().contains("--http-idle-timeout"));
        let built = HttpArgs { max_connections: 0, ..HttpArgs::default() };
        assert!(built.validate().unwrap_err().contains("--http-max-connections"));
    }
}
