-- The source of a backfill: the platform's users (DESIGN §8). A deployment may
-- replace this table with a view of the same columns.
CREATE TABLE IF NOT EXISTS users (
    id            bigint PRIMARY KEY,
    email         text,
    phone         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    signup_ip     text,
    last_login_ip text,
    device_id     text,
    deleted_at    timestamptz
);
-- The runner's keyset scan (`WHERE id > $cursor ORDER BY id LIMIT $n`) walks
-- the primary-key index; it reads deleted users too, to skip them with a reason.
