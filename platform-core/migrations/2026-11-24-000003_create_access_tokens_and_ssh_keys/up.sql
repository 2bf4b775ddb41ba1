-- Personal access tokens: only a SHA-256 of each token is kept; the token is shown once.
CREATE TABLE access_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    token_hash    BYTEA NOT NULL UNIQUE,
    scopes        TEXT[] NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX access_tokens_user_id ON access_tokens (user_id);

-- SSH public keys: a key (by its SHA256 fingerprint) belongs to one user only, so the SSH server
-- knows who connects.
CREATE TABLE ssh_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ssh_keys_user_id ON ssh_keys (user_id);
