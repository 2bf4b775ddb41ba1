-- Where a fork came from, and whether private history is in it (its source, or any source
-- before that, was private when it was forked): such a fork stays private.
ALTER TABLE repositories
    ADD COLUMN forked_from BIGINT REFERENCES repositories (id) ON DELETE SET NULL,
    ADD COLUMN private_lineage BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX repositories_forked_from ON repositories (forked_from) WHERE forked_from IS NOT NULL;
