-- PostgreSQL flavour of migrations/keys/0002: server-wide secrets, kept beside the
-- document keys and never in the main database, so a leaked database backup cannot
-- recompute them. `central_pseudonym`: the HMAC key the central office's pseudonyms
-- derive from (server/src/central/pseudonym.rs).
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
