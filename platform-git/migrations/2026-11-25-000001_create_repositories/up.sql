-- Repository records; the repositories themselves are bare repositories under APP_REPOS_ROOT,
-- at {owner}/{name}.git in lower case, which is why names are unique per owner without regard
-- to case.
CREATE TABLE repositories (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description     TEXT NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    is_private      BOOLEAN NOT NULL DEFAULT false,
    default_branch  TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX repositories_owner_name_lower_key ON repositories (owner_id, lower(name));
CREATE INDEX repositories_public ON repositories (id) WHERE NOT is_private;

-- Who besides the owner may read, write or administer a repository.
CREATE TABLE repository_collaborators (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, user_id)
);

CREATE INDEX repository_collaborators_user_id ON repository_collaborators (user_id);

-- Branch protection rules, read by the push policy. A pattern is a branch name or a glob
-- (`release/*`).
CREATE TABLE protected_branches (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id     BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    pattern           TEXT NOT NULL CHECK (char_length(pattern) BETWEEN 1 AND 255),
    push_access       TEXT NOT NULL DEFAULT 'write' CHECK (push_access IN ('write', 'admin')),
    allow_force_push  BOOLEAN NOT NULL DEFAULT false,
    allow_deletion    BOOLEAN NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (repository_id, pattern)
);
