-- A document's chunks are found by the (doc_id, hash) index that keeps a chunk from
-- being stored twice; `chunks_doc (doc_id, seq)` found the same rows again, in seq
-- order. Between compactions a document holds at most `hub::COMPACT_RATIO` times its
-- snapshot in chunks (a handful of rows for a live plan, hundreds for the largest),
-- so sorting them costs little next to a load, while the second index cost every
-- append one more random B-tree page in its commit (issue 18: on SQLite each dirty
-- page is written to the WAL and again at the checkpoint, and the group writer's
-- commits are bound by their pages).
DROP INDEX chunks_doc;
