-- Erased documents: the id stays known so a stale offline device cannot bring the
-- document back; nothing else of it remains in this database.
CREATE TABLE tombstones (
    doc_id      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    wijk_id     TEXT NOT NULL,
    erased_at   BIGINT NOT NULL,
    erased_by   TEXT NOT NULL
);

-- Who delivered each change (author binding): provenance of every edit.
CREATE TABLE change_authors (
    doc_id      TEXT NOT NULL REFERENCES documents(id),
    change_hash TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    device      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (doc_id, change_hash)
);
