DROP TABLE ssh_keys;
DROP TABLE access_tokens;
