-- The order of a repository's pushes, for webhooks: each push event is numbered when it is
-- recorded (push_seq), and a hook is sent a push only once every earlier push of its
-- repository has had its deliveries made (hooks_seq: all numbers up to it are done;
-- webhook_fan_outs: those done beyond it, out of order).
ALTER TABLE repositories
    ADD COLUMN push_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN hooks_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE webhook_fan_outs (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    seq            BIGINT NOT NULL,
    PRIMARY KEY (repository_id, seq)
);

ALTER TABLE webhook_deliveries ADD COLUMN push_seq BIGINT;
ALTER TABLE webhook_fan_outs ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- What the engine claims next for a hook: its waiting deliveries in push order, without
-- walking the hook's history or every other hook's backlog.
CREATE INDEX webhook_deliveries_waiting
    ON webhook_deliveries (hook_id, (COALESCE(push_seq, 0)), seq)
    WHERE state IN ('pending', 'delivering');
