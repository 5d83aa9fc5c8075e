//! All configuration, read once from the environment (and `.env`).
//!
//! Every value has an embedded default except `DATABASE_URL`; a malformed value
//! is an error that names its variable.

use crate::access::{ssr::AccessSettings, AllowList};
use crate::backfill::{
    domain::MAX_RUNTIME_MS,
    engine::{EngineSettings, NotifySettings, ThrottleSignal},
    identifiers::{Normalizer, PhoneRegion},
    sinks::{http::HttpGraphConfig, SinkConfig},
};
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub site_addr: SocketAddr,
    pub site_root: PathBuf,
    /// `DATABASE_MAX_CONNECTIONS`: the size of the console's pool.
    pub database_max_connections: u32,
    /// `ENGINE_MAX_CONNECTIONS`: the ceiling of the engine's pool, which
    /// opens connections as runs need them (chunks in flight, heartbeats,
    /// checkpoints, the watchdog, coverage checks).
    pub engine_max_connections: u32,
    /// `ENGINE_THREADS`: worker threads of the engine's runtime.
    pub engine_threads: usize,
    /// `ENGINE_NICE`: the nice value of the engine's threads (0–19).
    pub engine_nice: i32,
    /// `METRICS_ADDR`: where `/metrics` listens; off when unset.
    pub metrics_addr: Option<SocketAddr>,
    /// `METRICS_JOB_IDLE_SECS`: a job's series leave `/metrics` after this
    /// long without a change.
    pub metrics_job_idle: Duration,
    pub sink: SinkConfig,
    pub engine: EngineSettings,
    pub access: AccessSettings,
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `ENGINE_THREADS` and `ENGINE_NICE` alone: `main.rs` starts the
    /// engine's runtime before it knows which command runs, and most commands
    /// need nothing else.
    pub fn engine_runtime_from_env() -> Result<(usize, i32), ConfigError> {
        let _ = dotenvy::dotenv();
        let get = trimmed(|name| std::env::var(name).ok());
        Ok((engine_threads(&get)?, engine_nice(&get)?))
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = trimmed(lookup);

        let database_url = get("DATABASE_URL").ok_or_else(|| ConfigError {
            variable: "DATABASE_URL",
            reason: "is not set; point it at a Postgres database, e.g. postgres://user@127.0.0.1:5432/identity_graph_backfill (the README's run command sets it for you)".into(),
        })?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError {
                variable: "DATABASE_URL",
                reason: "must start with postgres:// or postgresql://".into(),
            });
        }

        let site_addr = match get("LEPTOS_SITE_ADDR") {
            None => "127.0.0.1:3000".parse().expect("valid literal address"),
            Some(raw) => raw.parse().map_err(|_| ConfigError {
                variable: "LEPTOS_SITE_ADDR",
                reason: format!("{raw:?} is not an address such as 127.0.0.1:3000"),
            })?,
        };
        let metrics_addr = match get("METRICS_ADDR") {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|_| ConfigError {
                variable: "METRICS_ADDR",
                reason: format!("{raw:?} is not an address such as 127.0.0.1:9464"),
            })?),
        };
        if metrics_addr == Some(site_addr) {
            return Err(ConfigError {
                variable: "METRICS_ADDR",
                reason: "must differ from LEPTOS_SITE_ADDR: metrics never share the console's port"
                    .into(),
            });
        }
        let site_root =
            PathBuf::from(get("LEPTOS_SITE_ROOT").unwrap_or_else(|| "target/site".into()));

        let sink = match get("IDENTITY_GRAPH_SINK").as_deref() {
            None | Some("none") => SinkConfig::NotConfigured,
            Some("postgres") => SinkConfig::Postgres,
            Some("http") => {
                let url = get("IDENTITY_GRAPH_URL").ok_or_else(|| ConfigError {
                    variable: "IDENTITY_GRAPH_URL",
                    reason: "is required when IDENTITY_GRAPH_SINK=http".into(),
                })?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError {
                        variable: "IDENTITY_GRAPH_URL",
                        reason: "must start with http:// or https://".into(),
                    });
                }
                let timeout_ms =
                    parse_number(&get, "IDENTITY_GRAPH_TIMEOUT_MS", 10_000, 1, 600_000)?;
                SinkConfig::Http(HttpGraphConfig {
                    url: url.trim_end_matches('/').to_string(),
                    token: get("IDENTITY_GRAPH_TOKEN"),
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
            Some(other) => {
                return Err(ConfigError {
                    variable: "IDENTITY_GRAPH_SINK",
                    reason: format!("{other:?} is not one of http, postgres, none"),
                })
            }
        };

        let trusted_proxies = get("TRUSTED_PROXY")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| ConfigError {
                        variable: "TRUSTED_PROXY",
                        reason: format!("{entry:?} is not an IP address such as 127.0.0.1"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let admins = AllowList::parse(&get("IDENTITY_GRAPH_BACKFILL_ADMINS").unwrap_or_default());

        Ok(Self {
            database_url,
            site_addr,
            site_root,
            database_max_connections: parse_number(&get, "DATABASE_MAX_CONNECTIONS", 20, 2, 1_000)?
                as u32,
            engine_max_connections: parse_number(&get, "ENGINE_MAX_CONNECTIONS", 40, 6, 1_000)?
                as u32,
            engine_threads: engine_threads(&get)?,
            engine_nice: engine_nice(&get)?,
            metrics_addr,
            metrics_job_idle: Duration::from_secs(parse_number(
                &get,
                "METRICS_JOB_IDLE_SECS",
                crate::server::metrics::DEFAULT_JOB_IDLE.as_secs(),
                1,
                31_536_000,
            )?),
            sink,
            engine: EngineSettings {
                watchdog_interval: Duration::from_millis(parse_number(
                    &get,
                    "IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS",
                    300_000,
                    100,
                    86_400_000,
                )?),
                lease_ttl: Duration::from_millis(parse_number(
                    &get,
                    "IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS",
                    30_000,
                    500,
                    3_600_000,
                )?),
                statement_timeout: Duration::from_millis(parse_number(
                    &get,
                    "ENGINE_STATEMENT_TIMEOUT_MS",
                    super::runtime::DEFAULT_ENGINE_STATEMENT_TIMEOUT.as_millis() as u64,
                    100,
                    3_600_000,
                )?),
                normalizer: Normalizer::new(match get("IDENTITY_GRAPH_PHONE_REGION") {
                    None => None,
                    Some(raw) => Some(PhoneRegion::parse(&raw).map_err(|reason| ConfigError {
                        variable: "IDENTITY_GRAPH_PHONE_REGION",
                        reason,
                    })?),
                }),
                hold_cap: Duration::from_millis(parse_number(
                    &get,
                    "IDENTITY_GRAPH_HOLD_CAP_MS",
                    300_000,
                    1_000,
                    86_400_000,
                )?),
                throttle_signal: match get("IDENTITY_GRAPH_THROTTLE_URL") {
                    None => None,
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        Some(ThrottleSignal {
                            url,
                            every: Duration::from_millis(parse_number(
                                &get,
                                "IDENTITY_GRAPH_THROTTLE_POLL_MS",
                                1_000,
                                100,
                                60_000,
                            )?),
                        })
                    }
                    Some(_) => {
                        return Err(ConfigError {
                            variable: "IDENTITY_GRAPH_THROTTLE_URL",
                            reason: "must start with http:// or https://".into(),
                        })
                    }
                },
                notify: notify_settings(&get, site_addr)?,
                coverage_check_timeout: Duration::from_millis(parse_number(
                    &get,
                    "COVERAGE_CHECK_TIMEOUT_MS",
                    300_000,
                    1_000,
                    86_400_000,
                )?),
                console_statement_timeout: Duration::from_millis(parse_number(
                    &get,
                    "CONSOLE_STATEMENT_TIMEOUT_MS",
                    2_000,
                    50,
                    600_000,
                )?),
                // The UI cap is the runtime cap's default, so it has its range.
                ui_runtime_cap_ms: parse_number(
                    &get,
                    "IDENTITY_GRAPH_BACKFILL_UI_RUNTIME_CAP_MS",
                    MAX_RUNTIME_MS.bounds.default as u64,
                    MAX_RUNTIME_MS.bounds.min as u64,
                    MAX_RUNTIME_MS.bounds.max as u64,
                )?,
            },
            access: AccessSettings {
                admins,
                session_idle_timeout: Duration::from_secs(parse_number(
                    &get,
                    "SESSION_IDLE_TIMEOUT_SECS",
                    1_800,
                    1,
                    31_536_000,
                )?),
                session_absolute_timeout: Duration::from_secs(parse_number(
                    &get,
                    "SESSION_ABSOLUTE_TIMEOUT_SECS",
                    43_200,
                    1,
                    31_536_000,
                )?),
                cookie_secure: parse_bool(&get, "SESSION_COOKIE_SECURE", false)?,
                login_failures_per_minute: parse_number(
                    &get,
                    "LOGIN_MAX_FAILURES_PER_MINUTE",
                    5,
                    1,
                    10_000,
                )? as u32,
                trusted_proxies,
            },
        })
    }
}

/// `NOTIFY_WEBHOOK_URL` and its companions. The job links default to the
/// address the console listens on, which is right for a local run only.
fn notify_settings(
    get: &impl Fn(&str) -> Option<String>,
    site_addr: SocketAddr,
) -> Result<NotifySettings, ConfigError> {
    let http_url = |variable: &'static str, value: String| {
        if value.starts_with("http://") || value.starts_with("https://") {
            Ok(value)
        } else {
            Err(ConfigError {
                variable,
                reason: "must start with http:// or https://".into(),
            })
        }
    };
    let public_base_url = match get("PUBLIC_BASE_URL") {
        Some(url) => http_url("PUBLIC_BASE_URL", url)?,
        None => format!("http://{site_addr}"),
    };
    Ok(NotifySettings {
        webhook_url: get("NOTIFY_WEBHOOK_URL")
            .map(|url| http_url("NOTIFY_WEBHOOK_URL", url))
            .transpose()?,
        public_base_url,
        timeout: Duration::from_millis(parse_number(
            get,
            "NOTIFY_WEBHOOK_TIMEOUT_MS",
            5_000,
            100,
            60_000,
        )?),
        retry_base: Duration::from_millis(parse_number(
            get,
            "NOTIFY_RETRY_BASE_MS",
            1_000,
            10,
            300_000,
        )?),
    })
}

/// A lookup that treats a blank value as unset.
fn trimmed(lookup: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        lookup(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

/// Two workers by default: enough for two runs at full speed beside the
/// console's thread on a small machine; more only helps with more cores.
fn engine_threads(get: &impl Fn(&str) -> Option<String>) -> Result<usize, ConfigError> {
    Ok(parse_number(get, "ENGINE_THREADS", 2, 1, 64)? as usize)
}

/// Nice 10 by default: the console's thread wins a busy core at once, and
/// an idle console leaves the engine every core.
fn engine_nice(get: &impl Fn(&str) -> Option<String>) -> Result<i32, ConfigError> {
    Ok(parse_number(get, "ENGINE_NICE", DEFAULT_ENGINE_NICE, 0, 19)? as i32)
}

pub const DEFAULT_ENGINE_NICE: u64 = 10;

fn parse_number(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(default);
    };
    let value: u64 = raw.parse().map_err(|_| ConfigError {
        variable,
        reason: format!("{raw:?} is not a whole number"),
    })?;
    if !(min..=max).contains(&value) {
        return Err(ConfigError {
            variable,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(value)
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(variable).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError {
            variable,
            reason: format!("{other:?} is not true or false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_only_a_database() {
        let config = config(&[("DATABASE_URL", "postgres://localhost/x")]).unwrap();
        assert_eq!(config.engine.watchdog_interval, Duration::from_secs(300));
        assert_eq!(config.engine.lease_ttl, Duration::from_secs(30));
        assert_eq!(config.engine.ui_runtime_cap_ms, 900_000);
        assert_eq!(config.engine_threads, 2);
        assert_eq!(config.engine_max_connections, 40);
        assert_eq!(config.database_max_connections, 20);
        assert_eq!(
            config.engine.console_statement_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            config.engine.coverage_check_timeout,
            Duration::from_secs(300)
        );
        assert_eq!(config.metrics_job_idle, Duration::from_secs(3_600));
        assert_eq!(config.sink, SinkConfig::NotConfigured);
        assert!(config.access.trusted_proxies.is_empty());
    }

    #[test]
    fn engine_nice_defaults_to_10_and_stays_within_0_to_19() {
        let base = [("DATABASE_URL", "postgres://x/y")];
        assert_eq!(config(&base).unwrap().engine_nice, 10);
        let off = config(&[base[0], ("ENGINE_NICE", "0")]).unwrap();
        assert_eq!(off.engine_nice, 0);
        for bad in ["20", "-5", "low"] {
            let error = config(&[base[0], ("ENGINE_NICE", bad)]).unwrap_err();
            assert_eq!(error.variable, "ENGINE_NICE", "{bad}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let missing = config(&[]).unwrap_err();
        assert_eq!(missing.variable, "DATABASE_URL");
        let bad_addr = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("LEPTOS_SITE_ADDR", "nope"),
        ])
        .unwrap_err();
        assert_eq!(bad_addr.variable, "LEPTOS_SITE_ADDR");
        let bad_sink = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("IDENTITY_GRAPH_SINK", "kafka"),
        ])
        .unwrap_err();
        assert_eq!(bad_sink.variable, "IDENTITY_GRAPH_SINK");
        let bad_number = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "soon"),
        ])
        .unwrap_err();
        assert_eq!(bad_number.variable, "IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS");
        let no_threads =
            config(&[("DATABASE_URL", "postgres://x/y"), ("ENGINE_THREADS", "0")]).unwrap_err();
        assert_eq!(no_threads.variable, "ENGINE_THREADS");
        let bad_proxy = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("TRUSTED_PROXY", "127.0.0.1, proxy.local"),
        ])
        .unwrap_err();
        assert_eq!(bad_proxy.variable, "TRUSTED_PROXY");
        assert!(
            bad_proxy.reason.contains("proxy.local"),
            "{}",
            bad_proxy.reason
        );
    }

    #[test]
    fn metrics_never_share_the_console_port() {
        let base = [("DATABASE_URL", "postgres://x/y")];
        assert_eq!(config(&base).unwrap().metrics_addr, None, "off by default");
        let same = config(&[
            base[0],
            ("LEPTOS_SITE_ADDR", "127.0.0.1:3000"),
            ("METRICS_ADDR", "127.0.0.1:3000"),
        ])
        .unwrap_err();
        assert_eq!(same.variable, "METRICS_ADDR");
        let set = config(&[base[0], ("METRICS_ADDR", "127.0.0.1:9464")]).unwrap();
        assert_eq!(set.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn the_token_is_never_printed() {
        let config = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("IDENTITY_GRAPH_SINK", "http"),
            ("IDENTITY_GRAPH_URL", "http://graph.local/"),
            ("IDENTITY_GRAPH_TOKEN", "s3cr3t-token"),
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t-token"));
    }
}
