-- The event log as a feed that watchers can follow without gaps (issue 10), the approach of
-- postgresql-event-sourcing: every event records the id of the transaction that wrote it, and a reader only
-- reads events of transactions below the oldest one still running (pg_snapshot_xmin), in (tx, event_id) order.
-- Everything below that horizon is final (committed or rolled back), and every later writer gets a higher
-- transaction id, so a cursor (tx, event_id) never skips an event that commits late, whatever the commit order.
-- Existing events all get this migration's transaction id (their order within it is event_id).
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();

-- The all-users feed and a user's feed, both walked forward from a cursor.
CREATE INDEX events_feed ON events (tx, event_id);
CREATE INDEX events_feed_by_user ON events (user_id, tx, event_id);

-- Wakes listeners (LISTEN trading_events) when events commit: NOTIFY is delivered at commit, once per
-- transaction for identical payloads. Only a wake-up: readers always re-read from the table, and re-read
-- periodically anyway, since a listener can miss notifications while its connection is down.
CREATE FUNCTION notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trading_events', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION notify_events();
