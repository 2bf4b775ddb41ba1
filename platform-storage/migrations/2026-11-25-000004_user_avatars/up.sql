-- The avatar each user uploaded: a PNG in the avatar root, named by its SHA-256. Users without
-- a row get their generated avatar.
CREATE TABLE user_avatars (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    file_name text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
