CREATE TABLE admins (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(btrim(email)) AND email <> ''),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Server-side sessions: the cookie holds a random token, the table its SHA-256.
CREATE TABLE admin_sessions (
    token_hash   bytea PRIMARY KEY,
    admin_id     bigint NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_sessions_admin_id ON admin_sessions (admin_id);

-- Failed sign-ins, by `email:<address>` and `ip:<address>`, for the rate limit.
CREATE TABLE login_failures (
    id        bigserial PRIMARY KEY,
    subject   text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_subject_time ON login_failures (subject, failed_at);
