-- The key store: one random key per document, in a database file of its own.
-- Backups of the main database never contain these keys, so destroying a key on
-- erasure makes the document unreadable in every older backup too (crypto-shredding).
CREATE TABLE doc_keys (
    doc_id      TEXT PRIMARY KEY,
    key         BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
