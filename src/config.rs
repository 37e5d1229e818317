//! Configuration: the TOML file, the defaults, and the typed settings.
//!
//! [`FileConfig`] mirrors the file exactly (unknown keys are refused, so a
//! typo is an error, not a silently ignored setting). [`Settings::resolve`]
//! lays command-line flags over the file over the defaults and checks every
//! value once, so the rest of the daemon works with `Duration`s and
//! validated numbers only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The file, key for key. Every field is optional; see `systemd/hookd.toml`
/// for the annotated example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Octal permission bits of the socket file, as a string ("0660").
    pub socket_mode: Option<String>,
    /// When set, only peers with one of these uids (or gids) may use the API.
    pub allowed_uids: Option<Vec<u32>>,
    pub allowed_gids: Option<Vec<u32>>,
    /// Seconds that attempts in flight get to finish on shutdown.
    pub shutdown_grace_s: Option<f64>,
    #[serde(default)]
    pub delivery: DeliveryFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub retention: RetentionFile,
    #[serde(default)]
    pub storage: StorageFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    pub timeout_ms: Option<u64>,
    pub retry_delays_s: Option<Vec<f64>>,
    pub max_in_flight: Option<usize>,
    pub max_in_flight_per_host: Option<usize>,
    pub retry_after_cap_s: Option<f64>,
    pub signing_secret: Option<String>,
    pub signing_secret_file: Option<PathBuf>,
    pub allow_private_networks: Option<bool>,
    pub allowed_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_payload_bytes: Option<usize>,
    pub max_batch: Option<usize>,
    pub max_batch_bytes: Option<usize>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub delivered_s: Option<u64>,
    pub dead_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    pub cache_capacity_mb: Option<u64>,
    pub min_free_mb: Option<u64>,
}

/// What the command line may lay over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

/// Validated settings of a running daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// Permission bits applied to the socket file.
    pub socket_mode: u32,
    /// Who may use the API, checked with each connection's peer
    /// credentials. Everyone who can open the socket when both are empty.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    pub shutdown_grace: Duration,
    pub delivery: DeliverySettings,
    pub limits: Limits,
    pub retention: Retention,
    /// sled's page cache bound, bytes.
    pub cache_capacity_bytes: u64,
    /// Free bytes that new deliveries must leave on the data dir's disk;
    /// 0 turns the check off.
    pub min_free_bytes: u64,
    /// Where the settings came from, for the startup log line.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub timeout: Duration,
    pub retry_delays: Vec<Duration>,
    pub max_in_flight: usize,
    pub max_in_flight_per_host: usize,
    pub retry_after_cap: Duration,
    /// `whsec_` secrets; every one signs each callback (rotation).
    pub signing_secrets: Vec<String>,
    pub allow_private_networks: bool,
    pub allowed_networks: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_batch: usize,
    /// The largest batch request body, bytes.
    pub max_batch_bytes: usize,
    /// API connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub delivered: Duration,
    pub dead: Duration,
}

/// Built-in defaults, also documented in `systemd/hookd.toml`.
pub mod defaults {
    pub const SOCKET_MODE: u32 = 0o660;
    pub const SHUTDOWN_GRACE_S: f64 = 10.0;
    pub const TIMEOUT_MS: u64 = 5000;
    pub const RETRY_DELAYS_S: [f64; 3] = [10.0, 30.0, 60.0];
    pub const MAX_IN_FLIGHT: usize = 256;
    pub const MAX_IN_FLIGHT_PER_HOST: usize = 32;
    pub const RETRY_AFTER_CAP_S: f64 = 3600.0;
    pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    pub const MAX_BATCH: usize = 1000;
    pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
    pub const MAX_CONNECTIONS: usize = 1024;
    pub const DELIVERED_S: u64 = 86_400;
    pub const DEAD_S: u64 = 604_800;
    pub const CACHE_CAPACITY_MB: u64 = 64;
    /// Room kept free on the data dir's disk for outcomes of the
    /// deliveries already stored, once submissions are refused.
    pub const MIN_FREE_MB: u64 = 64;
    /// The longest attempt timeout a delivery may ask for, milliseconds.
    pub const MAX_TIMEOUT_MS: u64 = 60_000;
    /// The most retries one schedule may hold.
    pub const MAX_RETRIES: usize = 20;
    /// The longest single wait a schedule may hold, seconds (a week).
    pub const MAX_RETRY_DELAY_S: f64 = 604_800.0;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read signing_secret_file {path}: {source}")]
    SecretFile { path: PathBuf, source: std::io::Error },
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        FileConfig::parse(&text)
            .map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses config text; the error is a readable sentence.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|error| error.message().to_owned())
    }
}

impl Settings {
    /// Flags over file over defaults, checked into typed values.
    pub fn resolve(
        file: FileConfig,
        overrides: Overrides,
        source: String,
    ) -> Result<Settings, ConfigError> {
        let data_dir = overrides.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir);
        let socket = overrides.socket.or(file.socket).unwrap_or_else(default_socket);
        let socket_mode = match file.socket_mode {
            Some(text) => parse_mode(&text)?,
            None => defaults::SOCKET_MODE,
        };
        let shutdown_grace = seconds(
            "shutdown_grace_s",
            file.shutdown_grace_s.unwrap_or(defaults::SHUTDOWN_GRACE_S),
        )?;

        Ok(Settings {
            data_dir,
            socket,
            socket_mode,
            allowed_uids: file.allowed_uids.unwrap_or_default(),
            allowed_gids: file.allowed_gids.unwrap_or_default(),
            shutdown_grace,
            delivery: resolve_delivery(file.delivery)?,
            limits: resolve_limits(file.limits)?,
            retention: Retention {
                delivered: Duration::from_secs(
                    file.retention.delivered_s.unwrap_or(defaults::DELIVERED_S),
                ),
                dead: Duration::from_secs(file.retention.dead_s.unwrap_or(defaults::DEAD_S)),
            },
            cache_capacity_bytes: positive(
                "storage.cache_capacity_mb",
                file.storage.cache_capacity_mb.unwrap_or(defaults::CACHE_CAPACITY_MB),
            )? * 1024
                * 1024,
            min_free_bytes: file.storage.min_free_mb.unwrap_or(defaults::MIN_FREE_MB) << 20,
            source,
        })
    }
}

/// `$STATE_DIRECTORY` (its first entry) under systemd, else `./hookd-data`.
pub fn default_data_dir() -> PathBuf {
    systemd_dir("STATE_DIRECTORY").unwrap_or_else(|| PathBuf::from("./hookd-data"))
}

/// `$RUNTIME_DIRECTORY/hookd.sock` under systemd, else `./hookd.sock`.
pub fn default_socket() -> PathBuf {
    systemd_dir("RUNTIME_DIRECTORY")
        .map(|dir| dir.join("hookd.sock"))
        .unwrap_or_else(|| PathBuf::from("./hookd.sock"))
}

fn systemd_dir(variable: &str) -> Option<PathBuf> {
    let value = std::env::var_os(variable)?;
    let first = value.to_str()?.split(':').next()?.to_owned();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

fn resolve_delivery(file: DeliveryFile) -> Result<DeliverySettings, ConfigError> {
    let timeout_ms = file.timeout_ms.unwrap_or(defaults::TIMEOUT_MS);
    if !(1..=defaults::MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(invalid(
            "delivery.timeout_ms",
            format!("must be between 1 and {}", defaults::MAX_TIMEOUT_MS),
        ));
    }

    let delays = file.retry_delays_s.unwrap_or_else(|| defaults::RETRY_DELAYS_S.to_vec());
    let retry_delays = retry_delays("delivery.retry_delays_s", &delays)
        .map_err(|message| invalid("delivery.retry_delays_s", message))?;

    let mut signing_secrets: Vec<String> = file.signing_secret.into_iter().collect();
    if let Some(path) = file.signing_secret_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::SecretFile { path: path.clone(), source })?;
        signing_secrets.extend(text.split_whitespace().map(str::to_owned));
    }
    for secret in &signing_secrets {
        crate::signing::Secret::parse(secret)
            .map_err(|message| invalid("delivery.signing_secret", message))?;
    }

    let allowed_networks = file
        .allowed_networks
        .unwrap_or_default()
        .iter()
        .map(|text| parse_network(text))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(DeliverySettings {
        timeout: Duration::from_millis(timeout_ms),
        retry_delays,
        max_in_flight: positive(
            "delivery.max_in_flight",
            file.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT),
        )?,
        max_in_flight_per_host: positive(
            "delivery.max_in_flight_per_host",
            file.max_in_flight_per_host.unwrap_or(defaults::MAX_IN_FLIGHT_PER_HOST),
        )?,
        retry_after_cap: seconds(
            "delivery.retry_after_cap_s",
            file.retry_after_cap_s.unwrap_or(defaults::RETRY_AFTER_CAP_S),
        )?,
        signing_secrets,
        allow_private_networks: file.allow_private_networks.unwrap_or(false),
        allowed_networks,
    })
}

fn resolve_limits(file: LimitsFile) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_payload_bytes: positive(
            "limits.max_payload_bytes",
            file.max_payload_bytes.unwrap_or(defaults::MAX_PAYLOAD_BYTES),
        )?,
        max_batch: positive("limits.max_batch", file.max_batch.unwrap_or(defaults::MAX_BATCH))?,
        max_batch_bytes: positive(
            "limits.max_batch_bytes",
            file.max_batch_bytes.unwrap_or(defaults::MAX_BATCH_BYTES),
        )?,
        max_connections: positive(
            "limits.max_connections",
            file.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
        )?,
    })
}

/// Checks a retry schedule (seconds, fractions allowed); shared by the
/// config file and per-delivery `retry_delays_s`.
pub fn retry_delays(key: &str, delays: &[f64]) -> Result<Vec<Duration>, String> {
    if delays.len() > defaults::MAX_RETRIES {
        return Err(format!("{key} may hold at most {} delays", defaults::MAX_RETRIES));
    }
    delays
        .iter()
        .map(|&delay| {
            if delay.is_finite() && (0.0..=defaults::MAX_RETRY_DELAY_S).contains(&delay) {
                Ok(Duration::from_secs_f64(delay))
            } else {
                Err(format!(
                    "{key} values must be between 0 and {} seconds, got {delay}",
                    defaults::MAX_RETRY_DELAY_S
                ))
            }
        })
        .collect()
}

fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(invalid("socket_mode", format!("{text:?} is not an octal mode such as \"0660\""))),
    }
}

fn parse_network(text: &str) -> Result<IpNet, ConfigError> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network);
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    Err(invalid(
        "delivery.allowed_networks",
        format!("{text:?} is not a CIDR such as \"127.0.0.0/8\" or an address"),
    ))
}

fn seconds(key: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid(key, format!("must be a number of seconds >= 0, got {value}")))
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(
    key: &'static str,
    value: T,
) -> Result<T, ConfigError> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(invalid(key, format!("must be above 0, got {value}")))
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Settings, ConfigError> {
        let file = FileConfig::parse(text)
            .map_err(|message| ConfigError::Parse { path: "test.toml".into(), message })?;
        Settings::resolve(file, Overrides::default(), "test".into())
    }

    #[test]
    fn empty_file_gives_the_contract_defaults() {
        let settings = resolve("").unwrap();

        assert_eq!(settings.socket_mode, 0o660);
        assert_eq!(settings.delivery.timeout, Duration::from_secs(5));
        assert_eq!(settings.delivery.retry_delays, [10, 30, 60].map(Duration::from_secs));
        assert_eq!(settings.delivery.max_in_flight, 256);
        assert_eq!(settings.delivery.max_in_flight_per_host, 32);
        assert_eq!(settings.delivery.retry_after_cap, Duration::from_secs(3600));
        assert!(!settings.delivery.allow_private_networks);
        assert_eq!(settings.limits.max_payload_bytes, 1_048_576);
        assert_eq!(settings.retention.delivered, Duration::from_secs(86_400));
        assert_eq!(settings.retention.dead, Duration::from_secs(604_800));
        assert_eq!(settings.cache_capacity_bytes, 64 * 1024 * 1024);
        assert_eq!(settings.min_free_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn the_documented_example_file_parses() {
        let text = include_str!("../systemd/hookd.toml");
        let settings = resolve(text).unwrap();
        assert_eq!(settings.delivery.retry_delays, [10, 30, 60].map(Duration::from_secs));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = FileConfig::parse("data_dir = \"/from/file\"\nsocket = \"/file.sock\"").unwrap();
        let overrides = Overrides { data_dir: Some("/from/flag".into()), socket: None };
        let settings = Settings::resolve(file, overrides, "test".into()).unwrap();

        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.socket, PathBuf::from("/file.sock"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = resolve("[delivery]\ntimeout = 5").unwrap_err().to_string();
        assert!(error.contains("unknown field `timeout`"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("socket_mode = \"999\"", "socket_mode"),
            ("[delivery]\ntimeout_ms = 0", "delivery.timeout_ms"),
            ("[delivery]\nretry_delays_s = [-1]", "delivery.retry_delays_s"),
            ("[delivery]\nmax_in_flight = 0", "delivery.max_in_flight"),
            ("[delivery]\nallowed_networks = [\"nope\"]", "delivery.allowed_networks"),
            ("[delivery]\nsigning_secret = \"plain\"", "delivery.signing_secret"),
        ] {
            let error = resolve(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn fractional_delays_and_octal_modes_are_read() {
        let settings =
            resolve("socket_mode = \"0600\"\n[delivery]\nretry_delays_s = [0.25, 1.5]").unwrap();

        assert_eq!(settings.socket_mode, 0o600);
        assert_eq!(
            settings.delivery.retry_delays,
            [Duration::from_millis(250), Duration::from_millis(1500)]
        );
    }
}
