-- Who watches which repository: each push to it is mailed to its watchers (those who can still
-- read it then, with a verified address, and not the pusher).
CREATE TABLE repository_watches (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, user_id)
);

-- A user's watched repositories (the primary key serves a repository's watchers).
CREATE INDEX repository_watches_user_id ON repository_watches (user_id);
