//! The AS2 start step of a process bundle: `processes/<name>/process.yaml`,
//! read and turned into a ready [`ListenerSpec`] with its keys loaded.
//! Every error names the file, the key and the reason.
//!
//! ```yaml
//! description: Orders from ACME
//! start:
//!   as2:
//!     as2_from:                          # the trading partner
//!       id: ACME
//!       signing_certificate: keystore:acme        # or a PEM path relative to the bundle
//!       client_certificate: keystore:acme-tls     # optional: pin its TLS client certificate
//!       basic_auth: { username: acme, password_env: ACME_AS2_PASSWORD }
//!       allowed_ips: ["203.0.113.10", "10.1.0.1-10.1.0.9", "192.168.*.*"]
//!       reject_duplicates: true
//!       duplicate_window: 100000       # the partner's last N accepted messages
//!       duplicate_window_days: 30        # and no older than this
//!     as2_to:                            # us
//!       id: OURCO
//!       decryption_key: keystore:ourco
//!       mdn_signing_key: keystore:ourco
//!     security:
//!       require_signed: true
//!       require_encrypted: true
//!       enforce_certificate_validity: false
//!       unsigned_compressed_mic: uncompressed_entity   # or payload (OpenAS2), compressed_entity
//!     max_request_size: 104857600
//!     async_mdn:
//!       allowed_urls: ["http://10.1.2.3:8080/mdn"]  # internal MDN targets allowed
//! ```

use std::path::{Path, PathBuf};

use atom_connectors::as2::cms::KeyPair;
use atom_connectors::as2::headers::parse_as2_id;
use atom_connectors::as2::mic::UnsignedCompressedMic;
use atom_connectors::as2::unwrap::ReceiveSettings;
use atom_connectors::keys;
use openssl::x509::X509;
use serde::Deserialize;

use super::ip_filter::IpFilter;
use crate::engine::ProcessEngine;
use crate::keystore::Keystore;
use crate::process::definition::{self, ProcessDefinition, RawDefinition};

/// The file every bundle has.
pub const PROCESS_FILE: &str = "process.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    description: Option<String>,
    start: RawStart,
    mode: Option<String>,
    limits: Option<definition::RawLimits>,
    settings: Option<std::collections::BTreeMap<String, String>>,
    steps: Option<Vec<definition::RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    as2: RawAs2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAs2 {
    as2_from: RawFrom,
    as2_to: RawTo,
    security: Option<RawSecurity>,
    max_request_size: Option<u64>,
    async_mdn: Option<RawListenerAsyncMdn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerAsyncMdn {
    /// Internal targets this partner may name in Receipt-Delivery-Option.
    allowed_urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrom {
    id: String,
    signing_certificate: Option<String>,
    client_certificate: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    allowed_ips: Option<Vec<String>>,
    reject_duplicates: Option<bool>,
    duplicate_window: Option<u64>,
    duplicate_window_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTo {
    id: String,
    decryption_key: Option<String>,
    mdn_signing_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    require_signed: Option<bool>,
    require_encrypted: Option<bool>,
    enforce_certificate_validity: Option<bool>,
    max_decompressed_size: Option<u64>,
    /// What our MIC covers when the partner compresses without signing.
    unsigned_compressed_mic: Option<String>,
}

/// Default and bounds of the duplicate window (DESIGN.md).
pub const DEFAULT_DUPLICATE_WINDOW: u64 = 100_000;
const DUPLICATE_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 100..=1_000_000;
/// Default and bounds of the duplicate window's age.
pub const DEFAULT_DUPLICATE_WINDOW_DAYS: u32 = 30;
const DUPLICATE_WINDOW_DAYS_RANGE: std::ops::RangeInclusive<u32> = 1..=3650;

/// One AS2 Shared Server operation, ready to receive.
#[derive(Debug)]
pub struct ListenerSpec {
    /// The process name (the bundle folder's name).
    pub id: String,
    pub description: Option<String>,
    pub bundle_dir: PathBuf,
    /// AS2-From: the partner.
    pub partner_id: String,
    /// AS2-To: us.
    pub our_id: String,
    pub receive: ReceiveSettings,
    pub mdn_signing_key: Option<KeyPair>,
    pub client_certificate: Option<X509>,
    pub basic_auth: Option<(String, String)>,
    /// `None`: any address may send.
    pub ip_filter: Option<IpFilter>,
    pub reject_duplicates: bool,
    /// Per partner: its last `count` accepted messages, at most `days` old.
    pub duplicate_window: crate::store::DuplicateWindow,
    pub max_request_size: Option<u64>,
    /// Where this partner's asynchronous MDNs may go.
    pub mdn_targets: std::sync::Arc<crate::server::mdn_target::MdnTargetPolicy>,
    /// The partner is authenticated by the transport (Basic auth, client
    /// certificate or IP filter), not only by a signature.
    pub transport_authenticated: bool,
    /// The steps after the start step, and how they run.
    pub process: ProcessDefinition,
    /// A short hash of process.yaml and the modules: which version runs.
    pub version: String,
}

/// What loading a bundle needs from the runtime.
#[derive(Clone, Copy)]
pub struct BundleContext<'a> {
    pub keystore: &'a Keystore,
    pub engine: &'a dyn ProcessEngine,
    /// Relative disk step directories are resolved against it.
    pub data_dir: &'a Path,
    /// `delivery.allowed_directories` of atom.yaml: where else disk steps
    /// may write.
    pub allowed_directories: &'a [PathBuf],
    /// `partners_dir` of atom.yaml: the profiles `as2` steps send with.
    pub partners_dir: &'a Path,
}

/// Why a bundle could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct BundleError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

/// Loads and validates a bundle folder.
pub fn load(bundle_dir: &Path, context: BundleContext<'_>) -> Result<ListenerSpec, BundleError> {
    let keystore = context.keystore;
    let file = bundle_dir.join(PROCESS_FILE);
    let err = |key: &str, reason: String| BundleError {
        file: file.clone(),
        key: key.into(),
        reason,
    };
    let id = bundle_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .ok_or_else(|| {
            err(
                "(folder)",
                "bundle folder name is not a valid process name".into(),
            )
        })?
        .to_string();
    let text =
        std::fs::read_to_string(&file).map_err(|e| err("(file)", format!("cannot read: {e}")))?;
    let raw: RawProcess = serde_yaml::from_str(&text).map_err(|e| err("(yaml)", e.to_string()))?;
    let process = definition::load(
        RawDefinition {
            mode: raw.mode,
            limits: raw.limits,
            settings: raw.settings,
            steps: raw.steps,
        },
        bundle_dir,
        context.data_dir,
        context.allowed_directories,
        context.engine,
        &definition::Partners {
            dir: context.partners_dir,
            keystore: context.keystore,
        },
    )
    .map_err(|(key, reason)| err(&key, reason))?;
    let version = bundle_version(&text, &process);
    let as2 = raw.start.as2;
    let partner_id = parse_as2_id(&as2.as2_from.id).map_err(|e| err("start.as2.as2_from.id", e))?;
    let our_id = parse_as2_id(&as2.as2_to.id).map_err(|e| err("start.as2.as2_to.id", e))?;

    let certificate =
        |key: &str, reference: &Option<String>| -> Result<Option<X509>, BundleError> {
            reference
                .as_deref()
                .map(|r| {
                    resolve_certificate(r, bundle_dir, keystore).map_err(|reason| err(key, reason))
                })
                .transpose()
        };
    let key_pair = |key: &str,
                    reference: &Option<String>|
     -> Result<Option<KeyPair>, BundleError> {
        reference
            .as_deref()
            .map(|r| resolve_key_pair(r, bundle_dir, keystore).map_err(|reason| err(key, reason)))
            .transpose()
    };
    let signing_certificate = certificate(
        "start.as2.as2_from.signing_certificate",
        &as2.as2_from.signing_certificate,
    )?;
    let client_certificate = certificate(
        "start.as2.as2_from.client_certificate",
        &as2.as2_from.client_certificate,
    )?;
    let decryption_key = key_pair(
        "start.as2.as2_to.decryption_key",
        &as2.as2_to.decryption_key,
    )?;
    let mdn_signing_key = key_pair(
        "start.as2.as2_to.mdn_signing_key",
        &as2.as2_to.mdn_signing_key,
    )?;

    let security = as2.security.unwrap_or_default();
    let require_signed = security.require_signed.unwrap_or(false);
    let require_encrypted = security.require_encrypted.unwrap_or(false);
    if require_signed && signing_certificate.is_none() {
        return Err(err(
            "start.as2.as2_from.signing_certificate",
            "require_signed is set but no partner signing certificate is given".into(),
        ));
    }
    if require_encrypted && decryption_key.is_none() {
        return Err(err(
            "start.as2.as2_to.decryption_key",
            "require_encrypted is set but no decryption key is given".into(),
        ));
    }
    let basic_auth = match as2.as2_from.basic_auth {
        None => None,
        Some(b) => {
            let password = match (b.password, b.password_env) {
                (Some(p), None) => p,
                (None, Some(var)) => std::env::var(&var).map_err(|_| {
                    err(
                        "start.as2.as2_from.basic_auth.password_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                _ => {
                    return Err(err(
                        "start.as2.as2_from.basic_auth",
                        "give exactly one of password or password_env".into(),
                    ))
                }
            };
            Some((b.username, password))
        }
    };
    let ip_filter = as2
        .as2_from
        .allowed_ips
        .as_deref()
        .map(IpFilter::parse)
        .transpose()
        .map_err(|e| err("start.as2.as2_from.allowed_ips", e))?;
    let duplicate_window = as2
        .as2_from
        .duplicate_window
        .unwrap_or(DEFAULT_DUPLICATE_WINDOW);
    if !DUPLICATE_WINDOW_RANGE.contains(&duplicate_window) {
        return Err(err(
            "start.as2.as2_from.duplicate_window",
            format!("{duplicate_window} is outside 100 to 1,000,000"),
        ));
    }
    let duplicate_window_days = as2
        .as2_from
        .duplicate_window_days
        .unwrap_or(DEFAULT_DUPLICATE_WINDOW_DAYS);
    if !DUPLICATE_WINDOW_DAYS_RANGE.contains(&duplicate_window_days) {
        return Err(err(
            "start.as2.as2_from.duplicate_window_days",
            format!("{duplicate_window_days} is outside 1 to 3650"),
        ));
    }
    let mdn_targets = crate::server::mdn_target::MdnTargetPolicy::parse(
        as2.async_mdn
            .as_ref()
            .and_then(|a| a.allowed_urls.as_deref())
            .unwrap_or_default(),
    )
    .map_err(|e| err("start.as2.async_mdn.allowed_urls", e))?;
    let defaults = ReceiveSettings::default();
    let unsigned_compressed_mic = match security.unsigned_compressed_mic.as_deref() {
        None => defaults.unsigned_compressed_mic,
        Some(text) => UnsignedCompressedMic::parse(text).ok_or_else(|| {
            err(
                "start.as2.security.unsigned_compressed_mic",
                format!(
                    "{text:?} is not one of {}",
                    UnsignedCompressedMic::NAMES.join(", ")
                ),
            )
        })?,
    };
    let receive = ReceiveSettings {
        decryption_keys: decryption_key.into_iter().collect(),
        partner_certs: signing_certificate.into_iter().collect(),
        enforce_cert_validity: security.enforce_certificate_validity.unwrap_or(false),
        require_signed,
        require_encrypted,
        max_decompressed_size: security
            .max_decompressed_size
            .unwrap_or(defaults.max_decompressed_size),
        unsigned_compressed_mic,
        // Large decompressed layers spill here, on the data filesystem, not
        // into a /tmp that may be memory.
        spool_dir: Some(context.data_dir.join("spool")),
    };
    let (basic_auth_set, client_certificate_set, ip_filter_set) = (
        basic_auth.is_some(),
        client_certificate.is_some(),
        ip_filter.is_some(),
    );
    Ok(ListenerSpec {
        id,
        description: raw.description,
        bundle_dir: bundle_dir.to_path_buf(),
        partner_id,
        our_id,
        receive,
        mdn_signing_key,
        client_certificate,
        basic_auth,
        ip_filter,
        reject_duplicates: as2.as2_from.reject_duplicates.unwrap_or(true),
        duplicate_window: crate::store::DuplicateWindow {
            count: duplicate_window,
            days: duplicate_window_days,
        },
        max_request_size: as2.max_request_size,
        mdn_targets: std::sync::Arc::new(mdn_targets),
        transport_authenticated: basic_auth_set || client_certificate_set || ip_filter_set,
        process,
        version,
    })
}

/// The first 12 hex digits of SHA-256 over process.yaml, the digests of
/// its modules (taken when they were read for compiling) and of the
/// partner profiles its `as2` steps use.
fn bundle_version(text: &str, process: &ProcessDefinition) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(text.as_bytes());
    for step in &process.steps {
        // A module's digest; a partner profile's (a changed profile is a
        // new version of the bundle).
        if let Some(bytes) = step.version() {
            digest.update(bytes);
        }
    }
    digest.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `keystore:NAME` or a path (relative to the bundle) of a PEM/DER certificate.
pub(crate) fn resolve_certificate(
    reference: &str,
    bundle_dir: &Path,
    keystore: &Keystore,
) -> Result<X509, String> {
    match reference.strip_prefix("keystore:") {
        Some(name) => keystore.certificate(name).map_err(|e| e.to_string()),
        None => keys::load_certificates(&bundle_dir.join(reference))
            .map(|mut certs| certs.remove(0))
            .map_err(|e| e.to_string()),
    }
}

/// `keystore:NAME` or a path (relative to the bundle) of a PEM holding key and certificate.
pub(crate) fn resolve_key_pair(
    reference: &str,
    bundle_dir: &Path,
    keystore: &Keystore,
) -> Result<KeyPair, String> {
    match reference.strip_prefix("keystore:") {
        Some(name) => keystore.key_pair(name).map_err(|e| e.to_string()),
        None => {
            keys::load_key_pair(&bundle_dir.join(reference), None, None).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};

    const PROCESS_YAML: &str = "start:\n  as2:\n    as2_from:\n      id: ACME\n    as2_to:\n      id: OURCO\n\
        steps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/orders\n      file_name: \"{as2_from}/{file_name}\"\n\
        \x20 - http:\n      url: http://erp.invalid/orders\n  - as2:\n      partner: acme\n";
    const GUEST: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
    const PARTNER: &str =
        "url: http://acme.invalid/as2\nas2_from: OURCO\nas2_to: ACME\nmdn: {mode: none}\n";

    /// Loads `processes/orders` with `yaml` as its process.yaml.
    fn load_with(dir: &Path, yaml: &str) -> Result<ListenerSpec, BundleError> {
        let bundle_dir = dir.join("processes/orders");
        std::fs::create_dir_all(&bundle_dir).expect("bundle dir");
        std::fs::create_dir_all(dir.join("partners")).expect("partners dir");
        std::fs::write(bundle_dir.join("guest.wat"), GUEST).expect("guest");
        std::fs::write(bundle_dir.join(PROCESS_FILE), yaml).expect("process.yaml");
        std::fs::write(dir.join("partners/acme.yaml"), PARTNER).expect("partner");
        let engine = WasmtimeEngine::new(EngineSettings {
            max_instances: 1,
            max_memory: 64 << 20,
            cache_dir: None,
        })
        .expect("engine");
        let data = dir.join("data");
        let keystore = Keystore::open(&data);
        load(
            &bundle_dir,
            BundleContext {
                keystore: &keystore,
                engine: engine.as_ref(),
                data_dir: &data,
                allowed_directories: &[],
                partners_dir: &dir.join("partners"),
            },
        )
    }

    /// The version is the first 12 hex digits of SHA-256 over process.yaml,
    /// each module's SHA-256 and each partner profile's (hex); the value
    /// below was computed outside Atom (Python's hashlib).
    #[test]
    fn the_version_hashes_process_yaml_modules_and_partner_profiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = load_with(dir.path(), PROCESS_YAML).expect("bundle loads");
        assert_eq!(spec.version, "860528b2260a");
        let data = std::path::absolute(dir.path().join("data")).expect("absolute");
        let described: Vec<String> = spec.process.steps.iter().map(|s| s.describe()).collect();
        assert_eq!(
            described,
            [
                "wasm guest.wat".to_string(),
                format!(
                    "disk {}/{{as2_from}}/{{file_name}}",
                    data.join("out/orders").display()
                ),
                "http http://erp.invalid/orders".to_string(),
                "as2 acme".to_string(),
            ]
        );
        assert_eq!(
            format!("{:?}", spec.process.steps[0]),
            "wasm guest.wat",
            "a step's Debug is its description"
        );
    }

    #[test]
    fn the_unsigned_compressed_mic_is_set_per_partner() {
        use atom_connectors::as2::mic::UnsignedCompressedMic;
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = load_with(dir.path(), PROCESS_YAML).expect("default");
        assert_eq!(
            spec.receive.unsigned_compressed_mic,
            UnsignedCompressedMic::UncompressedEntity
        );
        let with = |value: &str| {
            PROCESS_YAML.replace(
                "      id: OURCO\n",
                &format!(
                    "      id: OURCO\n    security:\n      unsigned_compressed_mic: {value}\n"
                ),
            )
        };
        let spec = load_with(dir.path(), &with("payload")).expect("payload");
        assert_eq!(
            spec.receive.unsigned_compressed_mic,
            UnsignedCompressedMic::Payload
        );
        let err = load_with(dir.path(), &with("headers")).expect_err("unknown value");
        let text = err.to_string();
        assert!(
            text.contains("start.as2.security.unsigned_compressed_mic")
                && text.contains("uncompressed_entity, payload, compressed_entity"),
            "{text}"
        );
    }

    #[test]
    fn a_step_gives_exactly_one_key_and_nothing_else_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "start:\n  as2:\n    as2_from:\n      id: ACME\n    as2_to:\n      id: OURCO\nsteps:\n  - wasm: guest.wat\n";
        for (step, key, reason) in [
            // Two keys: neither is loaded (the missing module is not looked at).
            (
                "  - wasm: missing.wat\n    http:\n      url: http://erp.invalid/\n",
                "steps[1]",
                "give exactly one of wasm, disk, http, as2",
            ),
            (
                "  - {}\n",
                "steps[1]",
                "give exactly one of wasm, disk, http, as2",
            ),
            (
                "  - wasm: missing.wat\n",
                "steps[1].wasm",
                "\"missing.wat\": ",
            ),
            (
                "  - disk:\n      directory: out\n      file_name: x\n      if_exists: keep\n",
                "steps[1].disk.if_exists",
                "\"keep\" is not one of overwrite, unique, error",
            ),
            (
                "  - http:\n      url: http://erp.invalid/\n      retries: 21\n",
                "steps[1].http.retries",
                "21 is above 20",
            ),
            (
                "  - http:\n      url: http://erp.invalid/\n      headers: {\"a b\": x}\n",
                "steps[1].http.headers",
                "\"a b\" is not a header name",
            ),
            (
                "  - as2:\n      partner: nobody\n",
                "steps[1].as2.partner",
                "",
            ),
        ] {
            let err = load_with(dir.path(), &format!("{base}{step}")).expect_err(step);
            assert_eq!(err.key, key, "{step}: {err}");
            assert!(err.reason.starts_with(reason), "{step}: {err}");
        }
    }
}
