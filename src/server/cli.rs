//! The binary's subcommands (DESIGN §10): `serve` (the default), `migrate`,
//! `admin add EMAIL`, `seed-demo --users N`, and the quick-start's `demo-setup`.

use super::{config::Config, database, http, seed};
use clap::{Parser, Subcommand};
use std::io::Read;

#[derive(Parser)]
#[command(
    name = "identity-graph-backfill",
    version,
    about = "Backfills historical users into the Identity Graph"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
    /// Measure throughput on a fresh database (see README, "Benchmarks").
    Bench(super::bench::BenchArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin, or set its password. The password is read from standard input.
    Add { email: String },
}

pub async fn run() -> Result<(), String> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::from_env().map_err(|e| e.to_string())?;
            http::serve(config).await.map_err(|e| e.to_string())
        }
        Command::Migrate => {
            let pool = connect().await?;
            println!("migrations applied");
            drop(pool);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Add { email },
        } => {
            let pool = connect().await?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| format!("could not read the password from standard input: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            let email = crate::access::ssr::upsert_admin(&pool, &email, password).await?;
            println!("admin {email} saved");
            Ok(())
        }
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
        Command::Bench(args) => super::bench::run(args).await,
    }
}

async fn connect() -> Result<sqlx::PgPool, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let pool = database::connect(&config.database_url, 4)
        .await
        .map_err(|e| e.to_string())?;
    database::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(pool)
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
            let password = random_password();
            crate::access::ssr::upsert_admin(&pool, email, &password).await?;
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

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
