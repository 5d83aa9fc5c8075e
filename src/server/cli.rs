//! The binary's operational subcommands (docs/commands.md): `serve` (the
//! default), `migrate`, `admin add EMAIL` / `admin remove EMAIL` / `admin
//! list`, `seed-demo --users N`, and the quick-start's `demo-setup`.
//! `main.rs` joins them with `bench`, which lives above this layer
//! (`crate::bench`).

use super::{config::Config, database, http, seed};
use clap::Subcommand;
use std::io::Read;

#[derive(Subcommand)]
pub enum Command {
    /// Serve the console and run backfills (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Manage operator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Add N synthetic users to the source `users` table.
    SeedDemo {
        #[arg(long, default_value_t = 50_000)]
        users: i64,
    },
    /// Quick-start set-up: demo users if the table is empty, and demo admins if there are none.
    DemoSetup {
        #[arg(long, default_value_t = 50_000)]
        users: i64,
        /// Where the demo credentials are kept, so later runs can print them again.
        #[arg(long, default_value = "target/demo-credentials.txt")]
        credentials_file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an admin, or change its password and end its sessions. The
    /// password is read from standard input and must pass the password policy.
    Add { email: String },
    /// Delete an admin and end all its sessions.
    Remove { email: String },
    /// Print every admin: allow-list membership, last sign-in, live sessions.
    List,
}

/// Runs `command` on the caller's runtime; `engine_runtime` is where
/// `serve`'s runs go (see `server::runtime`).
pub async fn run(command: Command, engine_runtime: &tokio::runtime::Handle) -> Result<(), String> {
    match command {
        Command::Serve => {
            let config = Config::from_env().map_err(|e| e.to_string())?;
            http::serve(config, engine_runtime)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
            let pool = connect().await?;
            println!("migrations applied");
            drop(pool);
            Ok(())
        }
        Command::Admin { command } => admin(command).await,
        Command::SeedDemo { users } => {
            let pool = connect().await?;
            let started = std::time::Instant::now();
            let (first, last) = seed::seed_demo_users(&pool, users)
                .await
                .map_err(|e| format!("could not seed users: {e}"))?;
            println!(
                "seeded {} users (ids {first}..={last}) in {:.1}s",
                last - first + 1,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::DemoSetup {
            users,
            credentials_file,
        } => demo_setup(users, &credentials_file).await,
    }
}

async fn connect() -> Result<sqlx::PgPool, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    connect_with(&config).await
}

async fn connect_with(config: &Config) -> Result<sqlx::PgPool, String> {
    let pool = database::connect(&config.database_url, 4)
        .await
        .map_err(|e| e.to_string())?;
    database::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(pool)
}

async fn admin(command: AdminCommand) -> Result<(), String> {
    use crate::access::ssr::admins;
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let pool = connect_with(&config).await?;
    match command {
        AdminCommand::Add { email } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| format!("could not read the password from standard input: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            match admins::upsert_admin(&pool, &email, password)
                .await
                .map_err(|e| e.to_string())?
            {
                admins::AdminSaved::Created { email } => println!("admin {email} created"),
                admins::AdminSaved::PasswordChanged {
                    email,
                    sessions_ended,
                } => println!("admin {email}: password changed, {sessions_ended} session(s) ended"),
            }
        }
        AdminCommand::Remove { email } => {
            let sessions_ended = admins::remove_admin(&pool, &email)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "admin {} removed, {sessions_ended} session(s) ended",
                crate::access::normalize_email(&email)
            );
        }
        AdminCommand::List => {
            let accounts = admins::list_admins(
                &pool,
                config.access.session_idle_timeout,
                config.access.session_absolute_timeout,
            )
            .await
            .map_err(|e| format!("could not list the admins: {e}"))?;
            print!(
                "{}",
                admins::format_admin_list(&accounts, &config.access.admins)
            );
        }
    }
    Ok(())
}

async fn demo_setup(users: i64, credentials_file: &std::path::Path) -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let pool = connect().await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    if existing == 0 {
        let (first, last) = seed::seed_demo_users(&pool, users)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "seeded {} demo users (ids {first}..={last})",
            last - first + 1
        );
    } else {
        println!("source users: {existing} already present");
    }
    let admins = crate::access::ssr::admin_count(&pool)
        .await
        .map_err(|e| e.to_string())?;
    if admins == 0 {
        let allowed = config
            .access
            .admins
            .emails()
            .first()
            .cloned()
            .unwrap_or_else(|| "operator@example.com".into());
        let not_allowed = "viewer@example.com".to_string();
        let mut lines = Vec::new();
        for (email, note) in [
            (&allowed, "on the allow-list"),
            (&not_allowed, "NOT on the allow-list"),
        ] {
            let password = demo_password(email)?;
            crate::access::ssr::upsert_admin(&pool, email, &password)
                .await
                .map_err(|e| e.to_string())?;
            lines.push(format!("  {email:<28} password: {password}   ({note})"));
        }
        if let Some(dir) = credentials_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(credentials_file, lines.join("\n") + "\n")
            .map_err(|e| format!("could not write {}: {e}", credentials_file.display()))?;
    }
    match std::fs::read_to_string(credentials_file) {
        Ok(text) => println!("Sign in with:\n{text}"),
        Err(_) => println!(
            "Admins already exist. Create or reset one with: identity-graph-backfill admin add EMAIL (password on stdin)"
        ),
    }
    Ok(())
}

/// A random demo password that passes the password policy: 20 characters
/// from a 54-symbol alphabet (about 115 bits). Drawn again in the unlikely
/// case the estimator finds a pattern in it.
fn demo_password(email: &str) -> Result<String, String> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    for _ in 0..10 {
        let password: String = (0..20)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        if crate::access::ssr::password_policy::check_password_policy(email, &password).is_ok() {
            return Ok(password);
        }
    }
    Err("could not draw a demo password that passes the password policy".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_passwords_pass_the_policy() {
        for email in ["operator@example.com", "viewer@example.com"] {
            let password = super::demo_password(email).unwrap();
            assert_eq!(password.len(), 20);
            crate::access::ssr::password_policy::check_password_policy(email, &password).unwrap();
        }
    }
}
