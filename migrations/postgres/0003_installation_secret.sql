-- Secrets generated once per installation (the JWT signing key when JWT_SECRET is unset),
-- shared by every instance on this database.
CREATE TABLE installation_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
