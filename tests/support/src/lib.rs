//! What the integration tests share (`tests/api`, `tests/ops`, `tests/browser`), split by concern:
//!
//! - [`database`]: a fresh, migrated PostgreSQL database per test, cloned from a template;
//! - [`app`]: a real server on 127.0.0.1:0 ([`TestApp`]), reached through the generated clients like any caller;
//! - [`auth`]: the test secret, tokens and authenticated requests;
//! - [`process`]: processes of a test's own (`redis-server`, a PostgreSQL cluster, the binary), stopped by PID;
//! - [`assert`]: reading errors and cache headers;
//! - [`health`]: what the health service says, and waiting for it;
//! - [`cache`]: reads that report their `x-cache` header, for the cache tests;
//! - the request builders are the service's own (`trading_monitor::samples`), re-exported here.
//!
//! A crate rather than a module each test binary includes, so it builds once and no binary carries helpers it
//! does not use.

pub mod app;
pub mod assert;
pub mod auth;
pub mod cache;
pub mod database;
pub mod health;
pub mod process;

pub use app::*;
pub use assert::*;
pub use auth::*;
pub use database::*;
pub use health::*;
pub use process::*;
pub use trading_monitor::samples::*;
