-- What pushes leave behind: the repository's size on disk and when it was last pushed to.
ALTER TABLE repositories
    ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pushed_at TIMESTAMPTZ;

-- Push events not yet accepted by the queue. A push writes its event here first, so the event
-- survives a queue outage (and a crash) and is published when the queue is back.
CREATE TABLE push_event_outbox (
    id          UUID PRIMARY KEY,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts    INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX push_event_outbox_created_at ON push_event_outbox (created_at);
