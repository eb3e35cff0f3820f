-- A user's open divergences (the book read, sync ingest, the summary's count) were found through the
-- position index and a filter on user_id: a walk over every open divergence of every user. An index that
-- starts with the user, in the order the book reads them.
CREATE INDEX divergences_open_by_user ON divergences (user_id, detected_at, divergence_id) WHERE resolved_at IS NULL;
