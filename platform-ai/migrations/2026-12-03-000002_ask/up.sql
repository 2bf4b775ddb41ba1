-- Ask-the-code: each user's conversations (kept until they expire), their turns, and each
-- user's daily token usage.
CREATE TABLE ask_conversations (
    id              UUID PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The repositories asked about, sorted; a follow-up asks about the same ones.
    repository_ids  BIGINT[] NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX ask_conversations_user ON ask_conversations (user_id);
CREATE INDEX ask_conversations_expiry ON ask_conversations (expires_at);

CREATE TABLE ask_turns (
    conversation_id    UUID NOT NULL REFERENCES ask_conversations (id) ON DELETE CASCADE,
    position           INTEGER NOT NULL,
    question           TEXT NOT NULL,
    answer             TEXT NOT NULL,
    citations          JSONB NOT NULL DEFAULT '[]',
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, position)
);

CREATE TABLE ai_usage (
    user_id            BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day                DATE NOT NULL,
    requests           INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);
