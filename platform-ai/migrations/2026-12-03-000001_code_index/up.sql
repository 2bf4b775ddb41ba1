-- The code search index of each repository: what it holds and what is asked of it. A row
-- outlives its repository on purpose (no foreign key): the index worker finds rows whose
-- repository is gone and deletes their chunks from the vector store, then the row.
CREATE TABLE code_index (
    repository_id   BIGINT PRIMARY KEY,
    -- Per-repository switch; the instance-wide one is configuration.
    enabled         BOOLEAN NOT NULL DEFAULT true,
    -- What the index holds: the commit and branch it was built from, with which model.
    indexed_commit  TEXT,
    indexed_branch  TEXT,
    model           TEXT,
    dimensions      INTEGER,
    files           BIGINT NOT NULL DEFAULT 0,
    chunks          BIGINT NOT NULL DEFAULT 0,
    skipped         JSONB NOT NULL DEFAULT '{}',
    indexed_at      TIMESTAMPTZ,
    -- Jobs asked for and not yet done; a job done resets it.
    pending         INTEGER NOT NULL DEFAULT 0,
    requested_at    TIMESTAMPTZ,
    -- The last failure, cleared by the next success.
    last_error      TEXT,
    failed_at       TIMESTAMPTZ,
    -- A reconcile of the whole tree was asked for (reindex, model change).
    rebuild         BOOLEAN NOT NULL DEFAULT false
);
