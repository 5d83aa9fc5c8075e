-- When each admin last signed in, for `admin list`. NULL: never.
ALTER TABLE admins ADD COLUMN last_signed_in_at timestamptz;
