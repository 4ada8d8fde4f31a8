-- buurtsync store, SQLite flavour. Times are unix seconds (UTC).

-- One row: the identity of this store, stable across restarts, so clients can keep
-- sync state per server storageId.
CREATE TABLE server_info (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    storage_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE wijken (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A role in a wijk (professional, volunteer, coordinator).
CREATE TABLE grants (
    user_id     TEXT NOT NULL REFERENCES users(id),
    wijk_id     TEXT NOT NULL REFERENCES wijken(id),
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, wijk_id, role)
);

-- A role without a wijk (consulent, central_office, admin).
CREATE TABLE global_grants (
    user_id     TEXT NOT NULL REFERENCES users(id),
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Bearer tokens, stored as SHA-256 of the secret: a leaked database holds no token.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- The documents catalog: the partition is written once, at creation.
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    wijk_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX documents_partition ON documents (wijk_id, kind);

CREATE TRIGGER documents_partition_is_fixed
BEFORE UPDATE OF kind, wijk_id ON documents
BEGIN
    SELECT RAISE(ABORT, 'a document''s partition never changes');
END;

-- Automerge bytes: incremental chunks appended per commit, compacted into one snapshot.
-- Keys are content hashes, so writing the same chunk twice is harmless.
CREATE TABLE chunks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id      TEXT NOT NULL REFERENCES documents(id),
    kind        TEXT NOT NULL CHECK (kind IN ('incremental', 'snapshot')),
    hash        BLOB NOT NULL,
    data        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (doc_id, hash)
);
CREATE INDEX chunks_doc ON chunks (doc_id, seq);

-- automerge sync::State::encode() per (peer storageId, document): cheap reconnects.
CREATE TABLE sync_states (
    storage_id  TEXT NOT NULL,
    doc_id      TEXT NOT NULL REFERENCES documents(id),
    state       BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (storage_id, doc_id)
);
