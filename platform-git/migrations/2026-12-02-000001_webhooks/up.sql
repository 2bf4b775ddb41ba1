-- Webhooks of a repository, and what was sent to them.
CREATE TABLE webhooks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    url              TEXT NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    content_type     TEXT NOT NULL DEFAULT 'json' CHECK (content_type IN ('json', 'form')),
    -- The HMAC key. It has to be kept as given to sign with it; the API never returns it.
    secret           TEXT CHECK (secret IS NULL OR char_length(secret) BETWEEN 1 AND 255),
    events           TEXT[] NOT NULL,
    active           BOOLEAN NOT NULL DEFAULT true,
    verify_tls       BOOLEAN NOT NULL DEFAULT true,
    -- Failed attempts since the last success; past a threshold the hook is paused
    -- (disabled_until), and past a larger one switched off (active = false).
    failures         INTEGER NOT NULL DEFAULT 0,
    disabled_until   TIMESTAMPTZ,
    disabled_reason  TEXT,
    -- Which worker is delivering to this hook, until when: one delivery at a time per hook.
    busy_token       UUID,
    busy_until       TIMESTAMPTZ,
    last_status      INTEGER,
    last_message     TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_repository_id ON webhooks (repository_id);

-- One event for one hook. The payload is kept as the exact JSON text sent, so a redelivery
-- sends (and signs) the same bytes.
CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    hook_id          BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event            TEXT NOT NULL,
    action           TEXT,
    -- What caused it, such as "<push event id>:push:refs/heads/main": the same cause never
    -- makes a second delivery to one hook.
    source_key       TEXT,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    redelivery       BOOLEAN NOT NULL DEFAULT false,
    status_code      INTEGER,
    duration_ms      INTEGER,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ
);

CREATE UNIQUE INDEX webhook_deliveries_source ON webhook_deliveries (hook_id, source_key);
CREATE INDEX webhook_deliveries_hook_seq ON webhook_deliveries (hook_id, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'delivering');

-- Every attempt of a delivery, as sent and as answered.
CREATE TABLE webhook_attempts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    started_at        TIMESTAMPTZ NOT NULL,
    duration_ms       INTEGER NOT NULL,
    url               TEXT NOT NULL,
    request_headers   JSONB NOT NULL,
    status_code       INTEGER,
    response_headers  JSONB,
    response_body     BYTEA,
    error             TEXT,
    delivered         BOOLEAN NOT NULL
);

CREATE INDEX webhook_attempts_delivery_id ON webhook_attempts (delivery_id, id);

-- Which reactions to a push are done, so a push event delivered twice is acted on once.
CREATE TABLE push_reactions_done (
    event_id    UUID NOT NULL,
    kind        TEXT NOT NULL,
    done_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, kind)
);

CREATE INDEX push_reactions_done_at ON push_reactions_done (done_at);

-- What pushes tell about a repository.
ALTER TABLE repositories
    ADD COLUMN push_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN branch_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN tag_count INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN languages JSONB NOT NULL DEFAULT '{}';
