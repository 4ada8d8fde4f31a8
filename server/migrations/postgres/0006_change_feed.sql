-- PostgreSQL flavour of migrations/sqlite/0006: the central office's incremental feed.
-- Every commit to a document, and every erasure, takes the next number of one
-- store-wide counter. A feed client keeps the highest number it has seen (its cursor)
-- and asks for what came after it.
-- A row, not a SEQUENCE: numbers must follow commit order, or a cursor could pass a
-- number whose transaction commits later. The store takes the number with
-- `UPDATE change_counter ... RETURNING seq`, whose row lock is held until the commit,
-- so the next transaction gets its number only once this one is visible.
CREATE TABLE change_counter (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL
);
INSERT INTO change_counter (id, seq) VALUES (1, 0);

-- The number of the document's last commit, and when it was (unix seconds).
ALTER TABLE documents ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- The number of the erasure, so the feed can tell the central office to drop it.
ALTER TABLE tombstones ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;

-- Documents stored before this migration: numbered in creation order (ids in byte
-- order, as SQLite compares them), then the erasures in erasure order.
UPDATE documents SET updated_at = created_at, change_seq = n.seq
  FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_at, id COLLATE "C") AS seq
          FROM documents) AS n
 WHERE documents.id = n.id;
UPDATE tombstones SET change_seq = (SELECT COUNT(*) FROM documents) + n.seq
  FROM (SELECT doc_id, ROW_NUMBER() OVER (ORDER BY erased_at, doc_id COLLATE "C") AS seq
          FROM tombstones) AS n
 WHERE tombstones.doc_id = n.doc_id;
UPDATE change_counter SET seq =
    (SELECT COUNT(*) FROM documents) + (SELECT COUNT(*) FROM tombstones);

CREATE INDEX documents_change_seq ON documents (change_seq);
CREATE INDEX tombstones_change_seq ON tombstones (change_seq);
