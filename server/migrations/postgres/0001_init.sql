-- buurtsync store, PostgreSQL flavour: the same tables as migrations/sqlite/0001, in
-- PostgreSQL types (BIGINT for times and sequences, BYTEA for bytes). Times are unix
-- seconds (UTC). Keep each file parallel to its SQLite twin of the same number.

-- One row: the identity of this store, shared by every node, so clients keep one sync
-- state per server storageId whichever node they reach.
CREATE TABLE server_info (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    storage_id  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE wijken (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A role in a wijk (professional, volunteer, coordinator).
CREATE TABLE grants (
    user_id     TEXT NOT NULL REFERENCES users(id),
    wijk_id     TEXT NOT NULL REFERENCES wijken(id),
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, wijk_id, role)
);

-- A role without a wijk (consulent, central_office, admin).
CREATE TABLE global_grants (
    user_id     TEXT NOT NULL REFERENCES users(id),
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Bearer tokens, stored as SHA-256 of the secret: a leaked database holds no token.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    secret_hash BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- The documents catalog: the partition is written once, at creation.
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    wijk_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX documents_partition ON documents (wijk_id, kind);

CREATE FUNCTION documents_partition_is_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a document''s partition never changes';
END;
$$;
CREATE TRIGGER documents_partition_is_fixed
BEFORE UPDATE OF kind, wijk_id ON documents
FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.wijk_id IS DISTINCT FROM NEW.wijk_id)
EXECUTE FUNCTION documents_partition_is_fixed();

-- Automerge bytes: incremental chunks appended per commit, compacted into one snapshot.
-- Keys are content hashes, so writing the same chunk twice (from two nodes) is harmless.
CREATE TABLE chunks (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id      TEXT NOT NULL REFERENCES documents(id),
    kind        TEXT NOT NULL CHECK (kind IN ('incremental', 'snapshot')),
    hash        BYTEA NOT NULL,
    data        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (doc_id, hash)
);
CREATE INDEX chunks_doc ON chunks (doc_id, seq);

-- automerge sync::State::encode() per (peer storageId, document): cheap reconnects.
CREATE TABLE sync_states (
    storage_id  TEXT NOT NULL,
    doc_id      TEXT NOT NULL REFERENCES documents(id),
    state       BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (storage_id, doc_id)
);
