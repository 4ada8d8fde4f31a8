-- The central office's incremental feed: every commit to a document, and every
-- erasure, takes the next number of one store-wide counter. A feed client keeps the
-- highest number it has seen (its cursor) and asks for what came after it.
-- Plain SQL on purpose: the PostgreSQL store ports it (there the counter wants a
-- SEQUENCE and commit-ordered reads; see docs/central-office.md).
CREATE TABLE change_counter (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL
);
INSERT INTO change_counter (id, seq) VALUES (1, 0);

-- The number of the document's last commit, and when it was (unix seconds).
ALTER TABLE documents ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
-- The number of the erasure, so the feed can tell the central office to drop it.
ALTER TABLE tombstones ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;

-- Documents stored before this migration: numbered in creation order.
UPDATE documents SET updated_at = created_at,
    change_seq = (SELECT COUNT(*) FROM documents AS d
                  WHERE d.created_at < documents.created_at
                     OR (d.created_at = documents.created_at AND d.id <= documents.id));
UPDATE tombstones SET change_seq = (SELECT COUNT(*) FROM documents) +
    (SELECT COUNT(*) FROM tombstones AS t
     WHERE t.erased_at < tombstones.erased_at
        OR (t.erased_at = tombstones.erased_at AND t.doc_id <= tombstones.doc_id));
UPDATE change_counter SET seq =
    (SELECT COUNT(*) FROM documents) + (SELECT COUNT(*) FROM tombstones);

CREATE INDEX documents_change_seq ON documents (change_seq);
CREATE INDEX tombstones_change_seq ON tombstones (change_seq);
