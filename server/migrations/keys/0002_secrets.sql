-- Server-wide secrets, kept beside the document keys and never in the main database,
-- so a leaked database backup cannot recompute them. `central_pseudonym`: the HMAC key
-- the central office's pseudonyms derive from (server/src/central/pseudonym.rs).
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
