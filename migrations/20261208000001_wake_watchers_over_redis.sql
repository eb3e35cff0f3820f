-- Watchers are woken over the cache's Redis invalidation channel, which every write already publishes its users
-- on after its commit (issue 18). The NOTIFY this trigger sent takes a cluster-wide lock held through each
-- commit's WAL flush (PreCommit_Notify in PostgreSQL's async.c), so every event-writing commit in the cluster
-- was serialised on it, whatever the number of replicas (see BENCHMARKS.md, "Ingest without the NOTIFY
-- trigger", for what it cost on the 2-core benchmark host). A replica that cannot hear Redis re-reads the feed
-- every --watch-poll-interval (100 ms) instead. Replicas of an older version, which LISTEN for it, fall back to
-- their periodic re-read (1 s) until they are upgraded.
DROP TRIGGER IF EXISTS events_notify ON events;
DROP FUNCTION IF EXISTS notify_events();
