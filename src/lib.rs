//! trading-monitor: a gRPC service that reconciles broker positions with the platform's, values open positions,
//! and evaluates the drawdown and market guards.
//!
//! Layout, from the top down (a module only imports the ones below it):
//! - `server`: the tonic server (`Application`), its tower layers, health, reflection, the admin listener and
//!   the background tasks under one stop signal;
//! - `services`: gRPC handlers, one folder per service, and `ApiError` with its one mapping to `tonic::Status`;
//! - `feed` (the event feed followed live per replica: hub, clock, resume tokens), `market_view` (the
//!   replica-local market snapshot);
//! - `cache` (in-process L1 + Redis cache-aside), `storage` (PostgreSQL via sqlx), `auth` (JWT), each with its
//!   own settings struct and error type;
//! - `domain`: pure rules, no I/O;
//! - beside them: `config` (the command line, turned into each room's settings), `telemetry` (logs, traces),
//!   `metrics` (the Prometheus registry), `demo` (demo data), `samples` (request builders), `pb` (generated).

pub mod auth;
pub mod cache;
pub mod config;
pub mod demo;
pub mod domain;
pub mod feed;
pub mod market_view;
pub mod metrics;
pub mod pb;
pub mod samples;
pub mod server;
pub mod services;
pub mod storage;
pub mod telemetry;
