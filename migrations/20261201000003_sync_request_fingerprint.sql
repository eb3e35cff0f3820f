-- A retry of SubmitBrokerSync must repeat the request exactly; the same request_id with another payload is
-- refused (ALREADY_EXISTS) instead of being answered with the first request's response. The fingerprint is the
-- SHA-256 of the request's protobuf encoding. Syncs recorded before this migration have none and replay on the
-- request id alone, as before.
ALTER TABLE syncs ADD COLUMN request_fingerprint bytea
    CONSTRAINT syncs_request_fingerprint_length CHECK (octet_length(request_fingerprint) = 32);
