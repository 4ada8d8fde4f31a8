-- The key store, PostgreSQL flavour of migrations/keys/0001: one random key per
-- document, in the schema buurtsync_keys or a database of its own (--keys). Backups of
-- the main data never contain these keys, so destroying a key on erasure makes the
-- document unreadable in every older backup too (crypto-shredding).
CREATE TABLE doc_keys (
    doc_id      TEXT PRIMARY KEY,
    key         BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
