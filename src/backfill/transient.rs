//! Which database errors pass by themselves: lost connections, pool
//! time-outs, a restarting Postgres, a serialization failure or deadlock.
//! A run that meets one pauses `interrupted` and the watchdog resumes it; a
//! built-in graph write retries it instead of blaming a user.

pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 53: insufficient resources;
            // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now;
            // 40001/40P01: serialization failure, deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}
