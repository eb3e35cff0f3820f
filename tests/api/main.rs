//! The fast integration tests: RPC semantics against one real server on 127.0.0.1:0 with a fresh PostgreSQL
//! database per test and the shared local Redis, called through the generated clients (and the REST gateway).
//! Process faults, replicas, the Redis Cluster and traces are in `tests/ops`; Chromium and Schemathesis in
//! `tests/browser`.

mod auth;
mod cache;
mod demo;
mod feed;
mod hardening;
mod ingest;
mod market;
mod operations;
mod reads;
mod rest;
mod rest_limits;
mod watch;
