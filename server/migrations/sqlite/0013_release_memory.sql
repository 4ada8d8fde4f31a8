-- The central office's release memory (issue 19): what every aggregate release
-- published, so a later release (on any node, after any restart) is consistent with
-- all earlier ones and differencing two releases pins no suppressed cell.

-- One row per release that changed the memory. `seq` is taken as the last one seen
-- plus one: two nodes that computed a release from the same memory both want the
-- same number, the primary key lets one of them record it, and the other recomputes
-- against the winner's release (`Releases::record`).
CREATE TABLE central_releases (
    seq          INTEGER PRIMARY KEY,
    released_at  INTEGER NOT NULL,
    -- How many cells this release changed in the memory.
    cells        INTEGER NOT NULL
);

-- What the releases so far said of each cell (`wijk|period|metric`): the value and
-- whether it was suppressed, as of the release that last changed it.
CREATE TABLE central_release_cells (
    cell         TEXT PRIMARY KEY,
    value        REAL NOT NULL,
    suppressed   INTEGER NOT NULL,
    release_seq  INTEGER NOT NULL
);
