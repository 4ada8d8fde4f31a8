-- One row per change to who may access what (grant added or removed, token revoked,
-- erasure). Every node polls MAX(id) and re-checks its live connections when it moves,
-- so a revocation made with the CLI reaches open connections on every node.
CREATE TABLE access_changes (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    what        TEXT NOT NULL
);
