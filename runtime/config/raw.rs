//! The serde model of `atom.yaml`, exactly as written. Every struct denies
//! unknown fields so that a typo is an error, not a silently ignored key.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub atom: Option<RawAtom>,
    pub data_dir: Option<PathBuf>,
    pub processes_dir: Option<PathBuf>,
    /// Partner profiles for sending (`as2` steps, `atom send --partner`).
    pub partners_dir: Option<PathBuf>,
    pub shared_web_server: Option<RawWebServer>,
    pub admin: Option<RawAdmin>,
    /// The operator console in the browser.
    pub console: Option<RawConsole>,
    /// Certificate expiry, errored listeners and failed sends, told.
    pub alerts: Option<RawAlerts>,
    pub store: Option<RawStore>,
    pub async_mdn: Option<RawAsyncMdn>,
    pub quotas: Option<RawQuotas>,
    pub engine: Option<RawEngine>,
    pub shutdown: Option<RawShutdown>,
    pub delivery: Option<RawDelivery>,
    pub molecule: Option<RawMolecule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMolecule {
    /// This node's name in the store (owner of its leases).
    pub node_id: Option<String>,
    /// How long a node's claim on an execution lasts without renewal.
    pub lease_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Absolute directories disk steps may write to besides data_dir.
    pub allowed_directories: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long SIGTERM waits for requests and executions under way.
    pub drain_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// `general` or `low_latency_debug`.
    pub default_as2_workload: Option<String>,
    pub general_workers: Option<usize>,
    pub low_latency_debug: Option<RawLowLatency>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLowLatency {
    pub max_running_executions: Option<usize>,
    pub max_queued_executions: Option<usize>,
    pub queued_execution_timeout_seconds: Option<u64>,
    pub max_execution_time_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub max_memory_mb: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub retention_days: Option<u32>,
    pub purge_interval_minutes: Option<u32>,
    /// How long a receipt waits for its commit before the sender gets 503.
    pub commit_timeout_seconds: Option<u64>,
    /// How much of a refused request's body is kept for diagnosis.
    pub refused_prefix_bytes: Option<u64>,
    /// A shared PostgreSQL store (a Molecule) instead of the embedded one.
    pub postgres: Option<RawPostgres>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// `postgres://user@host:port/database`, without a password.
    pub url: Option<String>,
    /// A file holding the password (else `ATOM_STORE_PASSWORD`).
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsyncMdn {
    pub first_retry_seconds: Option<u64>,
    pub max_retry_seconds: Option<u64>,
    pub give_up_after_hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAtom {
    pub name: Option<String>,
    pub account_id: Option<String>,
    pub instance_suffix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebServer {
    pub bind_address: Option<String>,
    /// `null` disables plain HTTP.
    #[serde(default, deserialize_with = "explicit_null")]
    pub http_port: Option<Option<u16>>,
    pub https: Option<RawHttps>,
    pub max_request_size: Option<u64>,
    pub worker_threads: Option<usize>,
    /// A body that sends nothing for this long is cut (408).
    pub body_idle_timeout_seconds: Option<u64>,
    /// A body slower than this on average (after the idle timeout) is cut.
    pub min_body_rate_bytes_per_second: Option<u64>,
    /// Open connections in all, across worker threads.
    pub max_connections: Option<usize>,
    /// AS2 requests under way from one client address.
    pub max_requests_per_address: Option<usize>,
    /// Open connections from one address (trusted proxies excepted).
    pub max_connections_per_address: Option<usize>,
    /// Load balancers whose X-Forwarded-For names the client.
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttps {
    pub enabled: Option<bool>,
    pub port: Option<u16>,
    /// Keystore name of the server key pair.
    pub keystore_name: Option<String>,
    /// Generate a self-signed key pair under `keystore_name` when missing.
    pub self_signed_if_missing: Option<bool>,
    /// `none`, `optional` or `required`.
    pub client_auth: Option<String>,
    /// PEM bundle of CAs (or pinned certificates) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// `false` serves no console.
    pub enabled: Option<bool>,
    pub address: Option<String>,
    /// Keystore name of the console's HTTPS key pair (required off loopback).
    pub https_keystore_name: Option<String>,
    /// A session unused this long must log in again.
    pub session_idle_minutes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Where alerts are POSTed as JSON.
    pub webhook_url: Option<String>,
    /// Days before expiry at which a certificate is warned about.
    pub expiry_warning_days: Option<Vec<u32>>,
    /// How often certificates, listeners and the outbox are looked at.
    pub check_interval_seconds: Option<u64>,
}

/// Distinguishes `key: null` (Some(None)) from an absent key (None).
fn explicit_null<'de, D>(deserializer: D) -> Result<Option<Option<u16>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<u16>::deserialize(deserializer).map(Some)
}
