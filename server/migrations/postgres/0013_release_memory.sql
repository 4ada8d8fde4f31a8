-- PostgreSQL flavour of migrations/sqlite/0013: the central office's release memory
-- (issue 19), shared by every node, so a release on one node is consistent with the
-- releases of every other node and with those before a restart.

-- One row per release that changed the memory; `seq` is the last one seen plus one,
-- and the primary key decides between two nodes that computed from the same memory.
CREATE TABLE central_releases (
    seq          BIGINT PRIMARY KEY,
    released_at  BIGINT NOT NULL,
    cells        BIGINT NOT NULL
);

-- What the releases so far said of each cell (`wijk|period|metric`).
CREATE TABLE central_release_cells (
    cell         TEXT PRIMARY KEY,
    value        DOUBLE PRECISION NOT NULL,
    suppressed   BOOLEAN NOT NULL,
    release_seq  BIGINT NOT NULL
);
