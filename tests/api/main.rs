//! Integration tests: the real server on 127.0.0.1:0, a fresh PostgreSQL database per test, called through the
//! generated clients.

mod auth;
mod browser;
mod cache;
mod cluster;
mod contract;
mod demo;
mod faults;
mod feed;
mod hardening;
mod helpers;
mod ingest;
mod market;
mod operations;
mod reads;
mod replicas;
mod rest;
mod traces;
mod watch;
