//! Ingest: SubmitBrokerSync through the engine.
