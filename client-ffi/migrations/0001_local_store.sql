-- The device's local store. Document bytes are sealed (XChaCha20-Poly1305) under the
-- app's key; only ids, partitions and change hashes are in the clear.

-- key_check: a sealed constant that tells a wrong key from a corrupt file.
-- storage_id: this store's automerge-repo storageId, sent in `join`.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    wijk        TEXT NOT NULL,
    -- nonce || ciphertext of Automerge::save(), associated data = the id's 16 bytes.
    sealed      BLOB NOT NULL,
    -- Heads the server acknowledged as committed (remote-heads-changed), hex, comma-separated.
    acked_heads TEXT NOT NULL DEFAULT '',
    updated_at  INTEGER NOT NULL
);

-- Per (document, server storageId): automerge sync state, so a reconnect is cheap.
CREATE TABLE sync_states (
    doc_id            TEXT NOT NULL,
    server_storage_id TEXT NOT NULL,
    state             BLOB NOT NULL,
    PRIMARY KEY (doc_id, server_storage_id)
);
