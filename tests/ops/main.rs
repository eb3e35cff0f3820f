//! The slower integration tests, which start or kill processes of their own: PostgreSQL stopped and restarted,
//! Redis killed or frozen, a 3 + 3 Redis Cluster failing over, two replicas on one database, the real binary
//! under SIGTERM and exporting traces to an OTLP receiver of the test's.

mod bus;
mod cache_faults;
mod cluster;
mod faults;
mod lifecycle;
mod replicas;
mod traces;
