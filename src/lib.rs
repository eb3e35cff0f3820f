//! trading-monitor: a gRPC service that reconciles broker positions with the platform's, values open positions,
//! and evaluates the drawdown and market guards.
//!
//! Layout: `config` (CLI and settings), `telemetry` (logs), `auth` (JWT), `server` (tonic server, layers, health,
//! reflection, shutdown), `services` (gRPC handlers: decode, call storage/domain, encode), `domain` (pure
//! rules: no I/O), `storage` (PostgreSQL via sqlx), `cache` (Redis + in-process cache-aside), `demo` (demo
//! data), `watch` (the live event feed behind the watch streams, and the clock of time-driven events).

pub mod auth;
pub mod cache;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod market_view;
pub mod metrics;
pub mod pb;
pub mod server;
pub mod services;
pub mod storage;
pub mod telemetry;
pub mod watch;
