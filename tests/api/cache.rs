//! The Redis cache: hits, invalidation, single flight, L1, faults of Redis and PostgreSQL.
