//! `seed-demo --users N`: realistic synthetic users, made by one set-based
//! INSERT so a million rows take seconds.
//!
//! The mix, by id: 1 in 20 share a household email (groups of 3), 1 in 12 a
//! phone (groups of 4), 1 in 9 a NAT'd signup IP (groups of 10), 1 in 10 a
//! device (groups of 4); 1 in 40 are deleted and 1 in 50 have no identifiers.

use sqlx::PgPool;

/// Appends `count` users after the current highest id. Returns the id range.
pub async fn seed_demo_users(pool: &PgPool, count: i64) -> Result<(i64, i64), sqlx::Error> {
    let first: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) + 1 FROM users")
        .fetch_one(pool)
        .await?;
    let last = first + count - 1;
    if count <= 0 {
        return Ok((first, first - 1));
    }
    sqlx::query(
        "INSERT INTO users (id, email, phone, created_at, signup_ip, last_login_ip, device_id, deleted_at)
         SELECT id,
                CASE WHEN none THEN NULL
                     WHEN id % 20 = 3 THEN 'household' || (id / 60) || '@example.net'
                     ELSE 'user' || id || '@example.com' END,
                CASE WHEN none OR id % 3 = 0 THEN NULL
                     WHEN id % 12 = 5 THEN '+4420' || lpad((id / 48)::text, 8, '0')
                     ELSE '+4477' || lpad((id % 100000000)::text, 8, '0') END,
                timestamptz '2019-01-01' + id * interval '97 seconds',
                CASE WHEN none THEN NULL
                     WHEN id % 9 = 4 THEN '10.200.' || ((id / 23040) % 256) || '.' || ((id / 90) % 256)
                     ELSE '10.' || ((id / 65536) % 200) || '.' || ((id / 256) % 256) || '.' || (id % 256) END,
                CASE WHEN none OR id % 4 = 0 THEN NULL
                     ELSE '172.' || (16 + (id / 65536) % 16) || '.' || ((id / 256) % 256) || '.' || (id % 256) END,
                CASE WHEN none THEN NULL
                     WHEN id % 10 = 1 THEN 'device-shared-' || (id / 40)
                     WHEN id % 5 = 2 THEN NULL
                     ELSE 'device-' || md5(id::text) END,
                CASE WHEN id % 40 = 11 THEN timestamptz '2024-06-01' + (id % 365) * interval '1 day' END
         FROM (SELECT id, (id % 50 = 7) AS none FROM generate_series($1::bigint, $2::bigint) AS id) AS g",
    )
    .bind(first)
    .bind(last)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE users").execute(pool).await?;
    Ok((first, last))
}
