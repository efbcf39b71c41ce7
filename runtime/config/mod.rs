//! `atom.yaml`: read as written ([`raw`]), then validated into [`Config`],
//! the only form the rest of the runtime sees. Unknown keys and bad values
//! are refused with the file, the key and the reason.

pub mod raw;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Client-certificate authentication on the HTTPS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Ask for a certificate; listeners that pin one require it.
    Optional,
    /// Refuse the TLS handshake without a valid certificate.
    Required,
}

/// HTTPS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsConfig {
    pub port: u16,
    pub keystore_name: String,
    pub self_signed_if_missing: bool,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
}

/// The shared web server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebServerConfig {
    pub bind_address: IpAddr,
    pub http_port: Option<u16>,
    pub https: Option<HttpsConfig>,
    /// Default request size limit; a listener may set a lower one.
    pub max_request_size: u64,
    /// Worker threads; 0 = one per core.
    pub worker_threads: usize,
    /// What a stranger's connections may hold.
    pub limits: ConnectionLimits,
    /// Peers whose `X-Forwarded-For` names the client (load balancers);
    /// IP filters and the per-address cap then apply to that client.
    pub trusted_proxies: Option<crate::listeners::ip_filter::IpFilter>,
}

/// Bounds on what one client, or all of them, can hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A body that sends nothing for this long is cut.
    pub body_idle_timeout: std::time::Duration,
    /// After the idle timeout has passed, a body slower than this on
    /// average is cut: a drip, not a slow link.
    pub min_body_rate: u64,
    pub max_connections: usize,
    pub max_requests_per_address: usize,
    /// Open connections from one address (requests or not); more are
    /// closed at accept. Trusted proxies are exempt.
    pub max_connections_per_address: usize,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the file was read from (relative paths in it are resolved
    /// against its directory).
    pub source: Option<PathBuf>,
    /// The Atom's name, shown in receipts and logs.
    pub name: String,
    /// `/as2/<account_id>` routes to this Atom.
    pub account_id: String,
    /// `/as2/<account_id>.<suffix>` routes too, when set.
    pub instance_suffix: Option<String>,
    /// Data directory: keystore, store, admin token.
    pub data_dir: PathBuf,
    /// The deploy folder of process bundles.
    pub processes_dir: PathBuf,
    /// Partner profiles for sending, one `<name>.yaml` each.
    pub partners_dir: PathBuf,
    pub web: WebServerConfig,
    /// Admin API address (loopback).
    pub admin_address: SocketAddr,
    /// `console:`: the operator console, `None` when disabled.
    pub console: Option<ConsoleConfig>,
    /// `alerts:`: expiry warnings and the webhook.
    pub alerts: AlertsConfig,
    /// Payloads, MDNs and history older than this are purged.
    pub retention_days: u32,
    /// How often the purge runs.
    pub purge_interval_minutes: u32,
    /// How long a receipt waits for its commit before the sender gets 503.
    pub commit_timeout: std::time::Duration,
    /// How long a SIGTERM waits for requests and executions under way.
    pub drain: std::time::Duration,
    /// Bytes of a refused request's body kept on disk (with its headers).
    pub refused_prefix_bytes: usize,
    /// Asynchronous MDN retries.
    pub async_mdn: AsyncMdnConfig,
    /// Worker modes and their limits.
    pub quotas: QuotasConfig,
    /// The most linear memory any guest may be given, in bytes.
    pub engine_max_memory: usize,
    /// `delivery:`: where disk steps may write.
    pub delivery: DeliveryConfig,
    /// `molecule:`: this node's name and its leases on work.
    pub molecule: MoleculeConfig,
    /// `store.postgres:`: the shared store of a Molecule; `None`: SQLite.
    pub postgres: Option<PostgresConfig>,
}

/// `alerts:` of atom.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// An http(s) URL alerts are POSTed to as JSON; logs only when `None`.
    pub webhook_url: Option<String>,
    /// Warn this many days before a certificate expires (largest first).
    pub expiry_warning_days: Vec<u32>,
    pub check_interval: std::time::Duration,
}

/// `console:` of atom.yaml: where the browser console listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub address: SocketAddr,
    /// The keystore key pair it serves HTTPS with; `None`: plain HTTP,
    /// allowed on loopback only.
    pub https_keystore_name: Option<String>,
    /// A session unused this long must log in again.
    pub session_idle: std::time::Duration,
}

/// `store.postgres:` of atom.yaml. The password is never in the file's
/// URL: it comes from `ATOM_STORE_PASSWORD` or `password_file`, read at
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user@host[:port]/database[?sslmode=...]`.
    pub url: String,
    pub password_file: Option<PathBuf>,
}

/// Checks `store.postgres.url`: a PostgreSQL URL with a user and a
/// database, and no password in it (a config file is read by many).
fn postgres_url(url: Option<String>) -> Result<String, String> {
    let Some(url) = url else {
        return Err("is required with store.postgres".into());
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{url:?} is not a postgres:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err("contains a password; put it in the ATOM_STORE_PASSWORD environment variable or in store.postgres.password_file".into());
        }
    }
    let database = rest
        .split_once('/')
        .map(|(_, d)| d.split('?').next().unwrap_or_default())
        .unwrap_or_default();
    if database.is_empty() {
        return Err(format!(
            "{url:?} names no database (postgres://user@host/database)"
        ));
    }
    Ok(url)
}

/// The host name, the default node ID ("atom" when it cannot be read).
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "atom".to_string(),
    }
}

/// `molecule:` of atom.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoleculeConfig {
    /// Owner of this node's leases; default: the host name.
    pub node_id: String,
    /// A claim on an execution lasts this long unless renewed (every third
    /// of it); a dead node's work is taken over after it.
    pub lease: std::time::Duration,
}

/// `delivery:` of atom.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Absolute directories disk steps may write into besides `data_dir`
    /// (`delivery.allowed_directories`); normalised, no `..`.
    pub allowed_directories: Vec<PathBuf>,
}

/// Which workers run a listener's executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMode {
    /// Queued durably, run by the pool of general workers.
    General,
    /// Straight to pre-warmed workers, bounded by the Atom Worker quotas.
    LowLatencyDebug,
}

impl WorkerMode {
    pub fn parse(text: &str) -> Option<WorkerMode> {
        match text {
            "general" => Some(WorkerMode::General),
            "low_latency_debug" => Some(WorkerMode::LowLatencyDebug),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerMode::General => "general",
            WorkerMode::LowLatencyDebug => "low_latency_debug",
        }
    }
}

/// `quotas:` of atom.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotasConfig {
    pub default_as2_workload: WorkerMode,
    /// Threads of the general worker pool.
    pub general_workers: usize,
    /// Atom Worker quotas of Low_Latency_Debug mode.
    pub low_latency: LowLatencyQuotas,
}

/// Atom Worker quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowLatencyQuotas {
    pub max_running_executions: usize,
    pub max_queued_executions: usize,
    pub queued_execution_timeout: std::time::Duration,
    pub max_execution_time: std::time::Duration,
}

/// Retry policy of asynchronous MDN delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMdnConfig {
    pub first_retry_seconds: u64,
    pub max_retry_seconds: u64,
    pub give_up_after_hours: u64,
}

/// A configuration error that names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// Default HTTP port of the shared web server.
pub const DEFAULT_HTTP_PORT: u16 = 9090;
/// Default HTTPS port.
pub const DEFAULT_HTTPS_PORT: u16 = 9093;
/// Default admin API address.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9190";
/// Default console address.
pub const DEFAULT_CONSOLE_ADDRESS: &str = "127.0.0.1:9191";
/// Default request size limit: 1 GiB.
pub const DEFAULT_MAX_REQUEST_SIZE: u64 = 1 << 30;

impl Default for Config {
    /// The documented defaults: what an empty `atom.yaml` means. They are
    /// constants that validate (the tests load an empty file), so this
    /// cannot fail on anything a user wrote.
    fn default() -> Self {
        Config::from_raw(raw::RawConfig::default(), Path::new("atom.yaml"))
            .expect("built-in defaults are valid")
    }
}

fn valid_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates configuration text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut config = Self::from_raw(raw, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    fn from_raw(raw: raw::RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        let atom = raw.atom.unwrap_or_default();
        let name = atom.name.unwrap_or_else(|| "atom".into());
        if name.trim().is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "atom.name",
                format!("{name:?} must be 1 to 64 printable characters"),
            ));
        }
        let account_id = atom.account_id.unwrap_or_else(|| "atom".into());
        if !valid_id(&account_id) {
            return Err(invalid(
                "atom.account_id",
                format!("{account_id:?} must be 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        if let Some(suffix) = &atom.instance_suffix {
            if !valid_id(suffix) {
                return Err(invalid(
                    "atom.instance_suffix",
                    format!("{suffix:?} must be 1 to 64 letters, digits, '-' or '_'"),
                ));
            }
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve =
            |key: &str, value: Option<PathBuf>, default: &str| -> Result<PathBuf, ConfigError> {
                match value {
                    Some(dir) if dir.as_os_str().is_empty() => {
                        Err(invalid(key, "must not be empty".into()))
                    }
                    Some(dir) if dir.is_absolute() => Ok(dir),
                    Some(dir) => Ok(base.join(dir)),
                    None => Ok(base.join(default)),
                }
            };
        let data_dir = resolve("data_dir", raw.data_dir, "data")?;
        let processes_dir = resolve("processes_dir", raw.processes_dir, "processes")?;
        let partners_dir = resolve("partners_dir", raw.partners_dir, "partners")?;

        let web = raw.shared_web_server.unwrap_or_default();
        let bind_text = web.bind_address.unwrap_or_else(|| "0.0.0.0".into());
        let bind_address: IpAddr = bind_text.parse().map_err(|_| {
            invalid(
                "shared_web_server.bind_address",
                format!("{bind_text:?} is not an IP address"),
            )
        })?;
        let http_port = web.http_port.unwrap_or(Some(DEFAULT_HTTP_PORT));
        let https = match web.https {
            Some(h) if h.enabled.unwrap_or(true) => {
                let client_auth = match h.client_auth.as_deref().unwrap_or("none") {
                    "none" => ClientAuth::None,
                    "optional" => ClientAuth::Optional,
                    "required" => ClientAuth::Required,
                    other => {
                        return Err(invalid(
                            "shared_web_server.https.client_auth",
                            format!("{other:?} is not one of none, optional, required"),
                        ))
                    }
                };
                let client_ca = match h.client_ca {
                    Some(p) if p.is_absolute() => Some(p),
                    Some(p) => Some(base.join(p)),
                    None => None,
                };
                if client_auth != ClientAuth::None && client_ca.is_none() {
                    return Err(invalid(
                        "shared_web_server.https.client_ca",
                        "client_auth needs client_ca: the CAs or certificates client certificates are checked against".into(),
                    ));
                }
                Some(HttpsConfig {
                    port: h.port.unwrap_or(DEFAULT_HTTPS_PORT),
                    keystore_name: h.keystore_name.unwrap_or_else(|| "atom-https".into()),
                    self_signed_if_missing: h.self_signed_if_missing.unwrap_or(false),
                    client_auth,
                    client_ca,
                })
            }
            _ => None,
        };
        if http_port.is_none() && https.is_none() {
            return Err(invalid(
                "shared_web_server",
                "both HTTP (http_port: null) and HTTPS are disabled".into(),
            ));
        }
        let max_request_size = web.max_request_size.unwrap_or(DEFAULT_MAX_REQUEST_SIZE);
        if max_request_size < 1024 {
            return Err(invalid(
                "shared_web_server.max_request_size",
                format!("{max_request_size} bytes is too small (minimum 1024)"),
            ));
        }
        let worker_threads = web.worker_threads.unwrap_or(0);
        if worker_threads > 1024 {
            return Err(invalid(
                "shared_web_server.worker_threads",
                format!("{worker_threads} is more than 1024"),
            ));
        }
        let body_idle_seconds = web.body_idle_timeout_seconds.unwrap_or(30);
        if !(1..=3600).contains(&body_idle_seconds) {
            return Err(invalid(
                "shared_web_server.body_idle_timeout_seconds",
                format!("{body_idle_seconds} is outside 1 to 3600"),
            ));
        }
        let max_connections = web.max_connections.unwrap_or(4096);
        if !(16..=1_000_000).contains(&max_connections) {
            return Err(invalid(
                "shared_web_server.max_connections",
                format!("{max_connections} is outside 16 to 1000000"),
            ));
        }
        let max_requests_per_address = web
            .max_requests_per_address
            .unwrap_or(256.min(max_connections));
        if !(1..=max_connections).contains(&max_requests_per_address) {
            return Err(invalid(
                "shared_web_server.max_requests_per_address",
                format!("{max_requests_per_address} is outside 1 to max_connections ({max_connections})"),
            ));
        }
        let trusted_proxies = match &web.trusted_proxies {
            Some(entries) if entries.is_empty() => None,
            Some(entries) => Some(
                crate::listeners::ip_filter::IpFilter::parse(entries)
                    .map_err(|e| invalid("shared_web_server.trusted_proxies", e))?,
            ),
            None => None,
        };
        let max_connections_per_address = web
            .max_connections_per_address
            .unwrap_or(512.min(max_connections));
        if !(1..=max_connections).contains(&max_connections_per_address) {
            return Err(invalid(
                "shared_web_server.max_connections_per_address",
                format!("{max_connections_per_address} is outside 1 to max_connections ({max_connections})"),
            ));
        }
        let limits = ConnectionLimits {
            body_idle_timeout: std::time::Duration::from_secs(body_idle_seconds),
            min_body_rate: web.min_body_rate_bytes_per_second.unwrap_or(1024),
            max_connections,
            max_requests_per_address,
            max_connections_per_address,
        };
        let admin_text = raw
            .admin
            .and_then(|a| a.address)
            .unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.into());
        let admin_address: SocketAddr = admin_text.parse().map_err(|_| {
            invalid(
                "admin.address",
                format!("{admin_text:?} is not an address:port"),
            )
        })?;
        if !admin_address.ip().is_loopback() {
            return Err(invalid(
                "admin.address",
                format!(
                    "{admin_address} is not a loopback address; the admin API stays on this host"
                ),
            ));
        }
        let console = console_from_raw(raw.console.unwrap_or_default())
            .map_err(|(key, reason)| invalid(key, reason))?;
        let alerts = alerts_from_raw(raw.alerts.unwrap_or_default())
            .map_err(|(key, reason)| invalid(key, reason))?;
        let store = raw.store.unwrap_or_default();
        let retention_days = store.retention_days.unwrap_or(30);
        if !(1..=36_500).contains(&retention_days) {
            return Err(invalid(
                "store.retention_days",
                format!("{retention_days} is outside 1 to 36500"),
            ));
        }
        let purge_interval_minutes = store.purge_interval_minutes.unwrap_or(60);
        if !(1..=10_080).contains(&purge_interval_minutes) {
            return Err(invalid(
                "store.purge_interval_minutes",
                format!("{purge_interval_minutes} is outside 1 to 10080"),
            ));
        }
        let commit_timeout_seconds = store.commit_timeout_seconds.unwrap_or(30);
        if !(1..=600).contains(&commit_timeout_seconds) {
            return Err(invalid(
                "store.commit_timeout_seconds",
                format!("{commit_timeout_seconds} is outside 1 to 600"),
            ));
        }
        let refused_prefix_bytes = store.refused_prefix_bytes.unwrap_or(64 * 1024);
        if refused_prefix_bytes > 16 << 20 {
            return Err(invalid(
                "store.refused_prefix_bytes",
                format!("{refused_prefix_bytes} is more than 16 MiB"),
            ));
        }
        let postgres = match store.postgres {
            None => None,
            Some(pg) => Some(PostgresConfig {
                url: postgres_url(pg.url).map_err(|e| invalid("store.postgres.url", e))?,
                password_file: pg
                    .password_file
                    .map(|f| if f.is_absolute() { f } else { base.join(f) }),
            }),
        };
        let molecule = raw.molecule.unwrap_or_default();
        let node_id = match molecule.node_id {
            Some(id)
                if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) =>
            {
                return Err(invalid(
                    "molecule.node_id",
                    format!("{id:?} must be 1 to 128 printable characters"),
                ))
            }
            Some(id) => id,
            None => host_name(),
        };
        let lease_seconds = molecule.lease_seconds.unwrap_or(30);
        if !(3..=3600).contains(&lease_seconds) {
            return Err(invalid(
                "molecule.lease_seconds",
                format!("{lease_seconds} is outside 3 to 3600"),
            ));
        }
        let molecule = MoleculeConfig {
            node_id,
            lease: std::time::Duration::from_secs(lease_seconds),
        };
        let drain_seconds = raw.shutdown.unwrap_or_default().drain_seconds.unwrap_or(30);
        if drain_seconds > 3600 {
            return Err(invalid(
                "shutdown.drain_seconds",
                format!("{drain_seconds} is outside 0 to 3600"),
            ));
        }
        let mdn = raw.async_mdn.unwrap_or_default();
        let async_mdn = AsyncMdnConfig {
            first_retry_seconds: mdn.first_retry_seconds.unwrap_or(1),
            max_retry_seconds: mdn.max_retry_seconds.unwrap_or(300),
            give_up_after_hours: mdn.give_up_after_hours.unwrap_or(24),
        };
        if async_mdn.first_retry_seconds == 0
            || async_mdn.first_retry_seconds > async_mdn.max_retry_seconds
        {
            return Err(invalid(
                "async_mdn.first_retry_seconds",
                "must be at least 1 and at most max_retry_seconds".into(),
            ));
        }
        if async_mdn.give_up_after_hours == 0 || async_mdn.give_up_after_hours > 24 * 30 {
            return Err(invalid(
                "async_mdn.give_up_after_hours",
                format!("{} is outside 1 to 720", async_mdn.give_up_after_hours),
            ));
        }
        let quotas =
            quotas_from_raw(raw.quotas.unwrap_or_default()).map_err(|(k, r)| invalid(k, r))?;
        let engine_max_memory_mb = raw.engine.unwrap_or_default().max_memory_mb.unwrap_or(512);
        if !(1..=4096).contains(&engine_max_memory_mb) {
            return Err(invalid(
                "engine.max_memory_mb",
                format!("{engine_max_memory_mb} is outside 1 to 4096"),
            ));
        }
        let mut allowed_directories = Vec::new();
        for (i, dir) in raw
            .delivery
            .unwrap_or_default()
            .allowed_directories
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("delivery.allowed_directories[{i}]");
            // Absolute: a relative root would move with the working directory.
            if !dir.is_absolute() {
                return Err(invalid(
                    &key,
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
            if dir
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(
                    &key,
                    format!("{} must not contain '..'", dir.display()),
                ));
            }
            if dir.parent().is_none() {
                return Err(invalid(
                    &key,
                    "/ would let disk steps write anywhere; name a directory".into(),
                ));
            }
            allowed_directories.push(dir.components().collect());
        }
        Ok(Config {
            source: None,
            name,
            account_id,
            instance_suffix: atom.instance_suffix,
            data_dir,
            processes_dir,
            partners_dir,
            web: WebServerConfig {
                bind_address,
                http_port,
                https,
                max_request_size,
                worker_threads,
                limits,
                trusted_proxies,
            },
            admin_address,
            console,
            alerts,
            retention_days,
            purge_interval_minutes,
            commit_timeout: std::time::Duration::from_secs(commit_timeout_seconds),
            drain: std::time::Duration::from_secs(drain_seconds),
            molecule,
            postgres,
            refused_prefix_bytes: refused_prefix_bytes as usize,
            async_mdn,
            quotas,
            engine_max_memory: engine_max_memory_mb << 20,
            delivery: DeliveryConfig {
                allowed_directories,
            },
        })
    }
}

fn alerts_from_raw(raw: raw::RawAlerts) -> Result<AlertsConfig, (&'static str, String)> {
    if let Some(url) = &raw.webhook_url {
        let parsed = url::Url::parse(url)
            .map_err(|e| ("alerts.webhook_url", format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err((
                "alerts.webhook_url",
                format!("{url:?} is not an http or https URL"),
            ));
        }
    }
    let mut days = raw
        .expiry_warning_days
        .unwrap_or_else(|| vec![30, 14, 7, 1]);
    if days.is_empty() || days.iter().any(|d| *d == 0 || *d > 3650) {
        return Err((
            "alerts.expiry_warning_days",
            format!("{days:?}: give one or more days from 1 to 3650"),
        ));
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    let interval = raw.check_interval_seconds.unwrap_or(60);
    if !(1..=86_400).contains(&interval) {
        return Err((
            "alerts.check_interval_seconds",
            format!("{interval} is outside 1 to 86400"),
        ));
    }
    Ok(AlertsConfig {
        webhook_url: raw.webhook_url,
        expiry_warning_days: days,
        check_interval: std::time::Duration::from_secs(interval),
    })
}

fn console_from_raw(raw: raw::RawConsole) -> Result<Option<ConsoleConfig>, (&'static str, String)> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let text = raw
        .address
        .unwrap_or_else(|| DEFAULT_CONSOLE_ADDRESS.into());
    let address: SocketAddr = text.parse().map_err(|_| {
        (
            "console.address",
            format!("{text:?} is not an address:port"),
        )
    })?;
    // Passwords and session cookies must not cross a network in clear.
    if !address.ip().is_loopback() && raw.https_keystore_name.is_none() {
        return Err((
            "console.address",
            format!(
                "{address} is not a loopback address; set console.https_keystore_name to serve the console over HTTPS"
            ),
        ));
    }
    let idle_minutes = raw.session_idle_minutes.unwrap_or(30);
    if !(1..=24 * 60).contains(&idle_minutes) {
        return Err((
            "console.session_idle_minutes",
            format!("{idle_minutes} is outside 1 to 1440"),
        ));
    }
    Ok(Some(ConsoleConfig {
        address,
        https_keystore_name: raw.https_keystore_name,
        session_idle: std::time::Duration::from_secs(idle_minutes * 60),
    }))
}

fn quotas_from_raw(raw: raw::RawQuotas) -> Result<QuotasConfig, (&'static str, String)> {
    let default_as2_workload = match raw.default_as2_workload.as_deref() {
        None => WorkerMode::General,
        Some(text) => WorkerMode::parse(text).ok_or((
            "quotas.default_as2_workload",
            format!("{text:?} is not one of general, low_latency_debug"),
        ))?,
    };
    let general_workers = raw.general_workers.unwrap_or(8);
    if !(1..=256).contains(&general_workers) {
        return Err((
            "quotas.general_workers",
            format!("{general_workers} is outside 1 to 256"),
        ));
    }
    let lld = raw.low_latency_debug.unwrap_or_default();
    let low_latency = LowLatencyQuotas {
        max_running_executions: lld.max_running_executions.unwrap_or(20),
        max_queued_executions: lld.max_queued_executions.unwrap_or(10),
        queued_execution_timeout: std::time::Duration::from_secs(
            lld.queued_execution_timeout_seconds.unwrap_or(10),
        ),
        max_execution_time: std::time::Duration::from_secs(
            lld.max_execution_time_seconds.unwrap_or(30),
        ),
    };
    if !(1..=1024).contains(&low_latency.max_running_executions) {
        return Err((
            "quotas.low_latency_debug.max_running_executions",
            format!(
                "{} is outside 1 to 1024",
                low_latency.max_running_executions
            ),
        ));
    }
    if low_latency.max_queued_executions > 10_000 {
        return Err((
            "quotas.low_latency_debug.max_queued_executions",
            format!("{} is above 10000", low_latency.max_queued_executions),
        ));
    }
    if low_latency.max_execution_time.is_zero() {
        return Err((
            "quotas.low_latency_debug.max_execution_time_seconds",
            "must be at least 1".into(),
        ));
    }
    Ok(QuotasConfig {
        default_as2_workload,
        general_workers,
        low_latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_atom_yaml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("atom.yaml");
        let config = Config::load(&path).expect("atom.yaml loads");
        assert_eq!(
            config.data_dir,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
        );
        assert_eq!(config.web.http_port, Some(DEFAULT_HTTP_PORT));
        assert_eq!(
            config.web.https.as_ref().map(|h| h.port),
            Some(DEFAULT_HTTPS_PORT)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let path = Path::new("/etc/atom/atom.yaml");
        let err = Config::parse("atom:\n  name: a\n  nmae: b\n", path).expect_err("typo refused");
        let text = err.to_string();
        assert!(
            text.contains("/etc/atom/atom.yaml") && text.contains("nmae"),
            "{text}"
        );
        let err = Config::parse("data_dir: ''\n", path).expect_err("empty refused");
        assert_eq!(
            err.to_string(),
            "/etc/atom/atom.yaml: key `data_dir`: must not be empty"
        );
        let err = Config::parse("atom:\n  name: ''\n", path).expect_err("empty name refused");
        assert!(err.to_string().contains("atom.name"));
        let err = Config::parse("console:\n  address: 0.0.0.0:9191\n", path)
            .expect_err("a console off loopback without HTTPS refused");
        assert!(
            err.to_string().contains("console.https_keystore_name"),
            "{err}"
        );
        let public = Config::parse(
            "console:\n  address: 0.0.0.0:9191\n  https_keystore_name: console-tls\n",
            path,
        )
        .expect("a console off loopback over HTTPS");
        let console = public.console.expect("console on");
        assert_eq!(console.https_keystore_name.as_deref(), Some("console-tls"));
        assert_eq!(
            console.session_idle,
            std::time::Duration::from_secs(30 * 60)
        );
        let off = Config::parse("console:\n  enabled: false\n", path).expect("console off");
        assert!(off.console.is_none());
        let err = Config::parse("console:\n  session_idle_minutes: 0\n", path)
            .expect_err("no idle time refused");
        assert!(err.to_string().contains("session_idle_minutes"), "{err}");
        let err = Config::parse("admin:\n  address: 0.0.0.0:9190\n", path)
            .expect_err("public admin refused");
        assert!(err.to_string().contains("loopback"), "{err}");
        let err =
            Config::parse("shared_web_server:\n  http_port: 70000\n", path).expect_err("bad port");
        assert!(err.to_string().contains("http_port"), "{err}");
        let err = Config::parse(
            "shared_web_server:\n  https:\n    client_auth: maybe\n",
            path,
        )
        .expect_err("bad enum");
        assert!(err.to_string().contains("client_auth"), "{err}");
        let err = Config::parse("shared_web_server:\n  http_port: null\n", path)
            .expect_err("nothing to serve");
        assert!(err.to_string().contains("both HTTP"), "{err}");
        let err = Config::parse("store:\n  retention_days: 0\n", path).expect_err("zero retention");
        assert!(err.to_string().contains("store.retention_days"), "{err}");
        let err = Config::parse("async_mdn:\n  first_retry_seconds: 600\n", path)
            .expect_err("first > max");
        assert!(
            err.to_string().contains("async_mdn.first_retry_seconds"),
            "{err}"
        );
        let err = Config::parse(
            "shared_web_server:\n  trusted_proxies: [10.0.0.1, haproxy]\n",
            path,
        )
        .expect_err("a name is not an address");
        assert!(
            err.to_string()
                .contains("shared_web_server.trusted_proxies")
                && err.to_string().contains("haproxy"),
            "{err}"
        );
        let proxies = Config::parse("shared_web_server:\n  trusted_proxies: [10.0.0.*]\n", path)
            .expect("wildcard")
            .web
            .trusted_proxies
            .expect("set");
        assert!(proxies.allows("10.0.0.7".parse().expect("ip")));
        let err = Config::parse(
            "store:\n  postgres:\n    url: postgres://atom:secret@db/atom\n",
            path,
        )
        .expect_err("a password in the URL");
        assert!(
            err.to_string().contains("store.postgres.url")
                && err.to_string().contains("ATOM_STORE_PASSWORD")
                && !err.to_string().contains("secret"),
            "{err}"
        );
        let err = Config::parse("store:\n  postgres:\n    url: postgres://atom@db\n", path)
            .expect_err("no database");
        assert!(err.to_string().contains("names no database"), "{err}");
        let pg = Config::parse(
            "store:\n  postgres:\n    url: postgres://atom@db:5433/atom?sslmode=require\n    password_file: pg.pass\n",
            path,
        )
        .expect("postgres")
        .postgres
        .expect("set");
        assert_eq!(pg.password_file, Some(PathBuf::from("/etc/atom/pg.pass")));
        let ok = Config::parse("data_dir: /var/lib/atom\n", path).expect("absolute path");
        assert_eq!(ok.data_dir, PathBuf::from("/var/lib/atom"));
        let err = Config::parse("delivery:\n  allowed_directories: [out]\n", path)
            .expect_err("relative root");
        assert_eq!(
            err.to_string(),
            "/etc/atom/atom.yaml: key `delivery.allowed_directories[0]`: out is not an absolute path"
        );
        for bad in ["/srv/../etc", "/"] {
            let err = Config::parse(
                &format!("delivery:\n  allowed_directories: [/srv/edi, {bad}]\n"),
                path,
            )
            .expect_err("refused");
            assert!(
                err.to_string()
                    .contains("key `delivery.allowed_directories[1]`"),
                "{err}"
            );
        }
        let err = Config::parse("delivery:\n  allowed_dirs: []\n", path).expect_err("typo");
        assert!(err.to_string().contains("allowed_dirs"), "{err}");
        let ok = Config::parse("delivery:\n  allowed_directories: [/srv/edi/out/]\n", path)
            .expect("absolute root");
        assert_eq!(
            ok.delivery.allowed_directories,
            [PathBuf::from("/srv/edi/out")]
        );
        let ok = Config::parse("{}\n", path).expect("defaults");
        assert!(ok.delivery.allowed_directories.is_empty());
        assert_eq!(ok.data_dir, PathBuf::from("/etc/atom/data"));
        assert_eq!(ok.web.https, None);
    }
}
