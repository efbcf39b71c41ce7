//! Partner profiles: the outbound side of a trading partner, one YAML file
//! per partner in `partners_dir` (atom.yaml; default `partners/`), used by
//! `as2` steps and by `atom send --partner NAME`.
//!
//! ```yaml
//! # partners/acme.yaml
//! url: https://as2.acme.example/as2
//! as2_from: OURCO                  # our AS2 ID (AS2-From)
//! as2_to: ACME                     # theirs (AS2-To)
//! subject: Orders from OURCO       # default "AS2 message from <as2_from>"
//! content_type: application/edi-x12   # default application/edi-consent
//! sign:                            # optional
//!   key: keystore:ourco            # or a PEM (key and certificate) relative to this file
//!   digest: sha256                 # md5 sha1 sha224 sha256 sha384 sha512
//!   pss: false
//! encrypt:                         # optional
//!   certificate: keystore:acme     # or a PEM/DER certificate relative to this file
//!   cipher: aes256-cbc             # 3des rc2-40 rc2-128 aes128-cbc aes192-cbc aes256-cbc aes128-gcm aes256-gcm
//!   oaep: false
//! compress: none                   # none | before_signing | after_signing
//! mdn:
//!   mode: sync                     # sync | async | none
//!   url: https://as2.ourco.example/as2/mdn   # async: Receipt-Delivery-Option, our shared web server
//!   wait_hours: 24                 # async: a receipt not here by then fails the document
//!   signed: true                   # ask for a signed receipt (default: when we sign)
//!   mic_algorithm: sha256          # default: the signing digest
//!   partner_certificates: [keystore:acme]   # verify the receipt (default: the encrypt certificate)
//! http:
//!   timeout_seconds: 60
//!   headers: { X-Sender: OURCO }
//!   basic_auth: { user: ourco, password_file: acme.password }
//!   ca_certificates: acme-ca.pem   # trust for https besides the system's (a CA or the pinned server certificate)
//!   client_certificate: keystore:ourco-tls   # TLS client certificate
//! retry:
//!   first_delay_seconds: 60        # doubles per attempt ...
//!   max_delay_seconds: 3600        # ... up to this
//!   give_up_after_hours: 48        # then the document fails
//! ```
//!
//! Asynchronous receipts arrive on the shared web server at `/as2/mdn` (or
//! as `multipart/report` on `/as2`) and are matched to the outbox by their
//! Original-Message-ID (`server/outbound_mdn.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atom_connectors::as2::build::{CompressionOrder, EncryptFor, MdnRequest, Outbound, SignWith};
use atom_connectors::as2::cms::{ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::headers::{parse_as2_id, quote_as2_id, MicAlg};
use atom_connectors::as2::mic::UnsignedCompressedMic;
use openssl::x509::X509;
use serde::Deserialize;
use sha2::Digest;

use crate::keystore::Keystore;
use crate::listeners::bundle::{resolve_certificate, resolve_key_pair};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    url: String,
    as2_from: String,
    as2_to: String,
    subject: Option<String>,
    content_type: Option<String>,
    sign: Option<RawSign>,
    encrypt: Option<RawEncrypt>,
    compress: Option<String>,
    mdn: Option<RawMdn>,
    http: Option<RawHttp>,
    retry: Option<RawRetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSign {
    key: String,
    digest: Option<String>,
    pss: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncrypt {
    certificate: String,
    cipher: Option<String>,
    oaep: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMdn {
    mode: Option<String>,
    signed: Option<bool>,
    mic_algorithm: Option<String>,
    partner_certificates: Option<Vec<String>>,
    url: Option<String>,
    wait_hours: Option<u64>,
    /// What the partner's MIC covers for compressed, unsigned messages.
    unsigned_compressed_mic: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    timeout_seconds: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    basic_auth: Option<RawBasicAuth>,
    ca_certificates: Option<PathBuf>,
    client_certificate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    user: String,
    password_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    first_delay_seconds: Option<u64>,
    max_delay_seconds: Option<u64>,
    give_up_after_hours: Option<u64>,
}

/// Signing of what we send.
#[derive(Debug, Clone)]
pub struct Signing {
    pub key: KeyPair,
    pub digest: MicAlg,
    pub scheme: SignatureScheme,
}

/// Encryption for the partner.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub certificate: X509,
    pub cipher: ContentCipher,
    pub transport: KeyTransport,
}

/// The receipt we ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnMode {
    None,
    Sync,
    /// POSTed to us later, at `MdnSettings::async_url`.
    Async,
}

#[derive(Debug, Clone)]
pub struct MdnSettings {
    pub mode: MdnMode,
    /// A signed receipt, with this MIC algorithm.
    pub signed: Option<MicAlg>,
    /// Certificates that may sign the partner's receipts.
    pub partner_certificates: Vec<X509>,
    /// Where the partner POSTs an asynchronous receipt.
    pub async_url: Option<String>,
    /// How long an asynchronous receipt is waited for.
    pub async_wait: Duration,
    /// What the receipt's MIC covers for a compressed, unsigned message.
    pub unsigned_compressed_mic: UnsignedCompressedMic,
}

/// The HTTP side of sending.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    /// PEM certificates trusted for https besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Our TLS client certificate and key.
    pub client_identity: Option<reqwest::Identity>,
}

/// When a document that failed transiently is tried again, and when not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
}

impl RetryPolicy {
    /// The delay after `attempts` attempts (1 or more): the first delay
    /// doubled per attempt after the first, at most `max_delay`.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.first_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// A loaded, checked partner profile.
#[derive(Debug, Clone)]
pub struct PartnerProfile {
    pub name: String,
    pub file: PathBuf,
    pub url: String,
    pub as2_from: String,
    pub as2_to: String,
    pub subject: String,
    pub content_type: String,
    pub sign: Option<Signing>,
    pub encrypt: Option<Encryption>,
    pub compression: CompressionOrder,
    pub mdn: MdnSettings,
    pub http: HttpSettings,
    pub retry: RetryPolicy,
    /// SHA-256 of the file, hex: part of the version of bundles using it.
    pub sha256: String,
}

/// Why a profile could not be used: the file, the key, the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("partner profile {}: {key}: {reason}", file.display())]
pub struct PartnerError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

/// A profile name is a file name without extension: letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a partner name (letters, digits, '-', '_', '.'; the file partners/<name>.yaml)"
        ))
    }
}

/// Where a profile's file is.
pub fn profile_path(partners_dir: &Path, name: &str) -> PathBuf {
    partners_dir.join(format!("{name}.yaml"))
}

/// Loads `partners_dir/<name>.yaml`, with its keys.
pub fn load(
    partners_dir: &Path,
    name: &str,
    keystore: &Keystore,
) -> Result<PartnerProfile, PartnerError> {
    let file = profile_path(partners_dir, name);
    let fail = |key: &str, reason: String| PartnerError {
        file: file.clone(),
        key: key.into(),
        reason,
    };
    check_name(name).map_err(|r| fail("(name)", r))?;
    let text = std::fs::read_to_string(&file).map_err(|e| {
        fail(
            "(file)",
            format!(
                "cannot read it: {e} (partners_dir in atom.yaml is {})",
                partners_dir.display()
            ),
        )
    })?;
    let raw: RawProfile = serde_yaml::from_str(&text).map_err(|e| fail("(yaml)", e.to_string()))?;
    let sha256 = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = reqwest::Url::parse(&raw.url).map_err(|e| fail("url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(
            "url",
            "only http:// and https:// are supported".into(),
        ));
    }
    for (key, id) in [("as2_from", &raw.as2_from), ("as2_to", &raw.as2_to)] {
        parse_as2_id(&quote_as2_id(id)).map_err(|e| fail(key, e.to_string()))?;
    }
    let mic_alg = |key: &str, name: &str| {
        MicAlg::from_name(name).ok_or_else(|| {
            fail(
                key,
                format!("{name:?} is not one of md5, sha1, sha224, sha256, sha384, sha512"),
            )
        })
    };
    let sign = match raw.sign {
        Some(s) => Some(Signing {
            key: resolve_key_pair(&s.key, partners_dir, keystore)
                .map_err(|r| fail("sign.key", r))?,
            digest: mic_alg("sign.digest", s.digest.as_deref().unwrap_or("sha256"))?,
            scheme: if s.pss.unwrap_or(false) {
                SignatureScheme::Pss
            } else {
                SignatureScheme::Pkcs1v15
            },
        }),
        None => None,
    };
    let encrypt = match raw.encrypt {
        Some(e) => {
            let cipher_name = e.cipher.as_deref().unwrap_or("aes256-cbc");
            Some(Encryption {
                certificate: resolve_certificate(&e.certificate, partners_dir, keystore)
                    .map_err(|r| fail("encrypt.certificate", r))?,
                cipher: ContentCipher::from_name(cipher_name).ok_or_else(|| {
                    fail(
                        "encrypt.cipher",
                        format!("{cipher_name:?} is not one of 3des, rc2-40, rc2-128, aes128-cbc, aes192-cbc, aes256-cbc, aes128-gcm, aes256-gcm"),
                    )
                })?,
                transport: if e.oaep.unwrap_or(false) {
                    KeyTransport::RsaOaep
                } else {
                    KeyTransport::RsaPkcs1v15
                },
            })
        }
        None => None,
    };
    let compression = match raw.compress.as_deref().unwrap_or("none") {
        "none" => CompressionOrder::None,
        "before_signing" => CompressionOrder::BeforeSigning,
        "after_signing" => CompressionOrder::AfterSigning,
        other => {
            return Err(fail(
                "compress",
                format!("{other:?} is not one of none, before_signing, after_signing"),
            ))
        }
    };
    let raw_mdn = raw.mdn.unwrap_or_default();
    let mode = match raw_mdn.mode.as_deref().unwrap_or("sync") {
        "sync" => MdnMode::Sync,
        "none" => MdnMode::None,
        "async" => MdnMode::Async,
        other => {
            return Err(fail(
                "mdn.mode",
                format!("{other:?} is not one of sync, async, none"),
            ))
        }
    };
    let async_url = match (mode, raw_mdn.url) {
        (MdnMode::Async, Some(url)) => {
            let parsed = reqwest::Url::parse(&url).map_err(|e| fail("mdn.url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(fail("mdn.url", "only http:// and https:// are supported".into()));
            }
            Some(url)
        }
        (MdnMode::Async, None) => {
            return Err(fail(
                "mdn.url",
                "an asynchronous receipt needs the URL the partner posts it to: our shared web server's /as2/mdn, as the partner reaches it".into(),
            ))
        }
        (_, Some(_)) => return Err(fail("mdn.url", "only for mode: async".into())),
        (_, None) => None,
    };
    let async_wait = Duration::from_secs(raw_mdn.wait_hours.unwrap_or(24).saturating_mul(3600));
    if async_wait.is_zero() {
        return Err(fail("mdn.wait_hours", "must be at least 1".into()));
    }
    let unsigned_compressed_mic = match raw_mdn.unsigned_compressed_mic.as_deref() {
        None => UnsignedCompressedMic::default(),
        Some(text) => UnsignedCompressedMic::parse(text).ok_or_else(|| {
            fail(
                "mdn.unsigned_compressed_mic",
                format!(
                    "{text:?} is not one of {}",
                    UnsignedCompressedMic::NAMES.join(", ")
                ),
            )
        })?,
    };
    let signed = match (mode, raw_mdn.signed) {
        (MdnMode::None, Some(true)) => {
            return Err(fail(
                "mdn.signed",
                "a signed receipt needs a receipt: mdn.mode sync".into(),
            ))
        }
        (MdnMode::None, _) | (_, Some(false)) => None,
        (_, Some(true)) => Some(()),
        (_, None) => sign.as_ref().map(|_| ()),
    };
    let signed = match signed {
        Some(()) => Some(match &raw_mdn.mic_algorithm {
            Some(name) => mic_alg("mdn.mic_algorithm", name)?,
            None => sign.as_ref().map_or(MicAlg::Sha256, |s| s.digest),
        }),
        None => None,
    };
    let mut partner_certificates = Vec::new();
    for (i, reference) in raw_mdn
        .partner_certificates
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        partner_certificates.push(
            resolve_certificate(reference, partners_dir, keystore)
                .map_err(|r| fail(&format!("mdn.partner_certificates[{i}]"), r))?,
        );
    }
    if partner_certificates.is_empty() {
        partner_certificates.extend(encrypt.as_ref().map(|e| e.certificate.clone()));
    }
    if signed.is_some() && partner_certificates.is_empty() {
        return Err(fail(
            "mdn.partner_certificates",
            "a signed receipt is asked for but no certificate can verify it: name the partner's certificate here (or under encrypt)".into(),
        ));
    }
    let raw_http = raw.http.unwrap_or_default();
    let mut headers = Vec::new();
    for (name, value) in raw_http.headers {
        let reserved = [
            "as2-from",
            "as2-to",
            "as2-version",
            "message-id",
            "content-type",
            "content-length",
            "disposition-notification-to",
            "disposition-notification-options",
            "receipt-delivery-option",
        ];
        if reserved.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(fail(
                &format!("http.headers.{name}"),
                "set by Atom from the profile; remove it here".into(),
            ));
        }
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail("http.headers", format!("{name:?} is not a header name")))?;
        reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            fail(
                &format!("http.headers.{name}"),
                "not a valid header value (use ASCII)".into(),
            )
        })?;
        headers.push((name, value));
    }
    let basic_auth = match raw_http.basic_auth {
        Some(auth) => {
            let path = partners_dir.join(&auth.password_file);
            let password = std::fs::read_to_string(&path).map_err(|e| {
                fail(
                    "http.basic_auth.password_file",
                    format!("{}: {e}", path.display()),
                )
            })?;
            Some((
                auth.user,
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        None => None,
    };
    let ca_pem = match raw_http.ca_certificates {
        Some(path) => {
            let path = partners_dir.join(path);
            let pem = std::fs::read(&path)
                .map_err(|e| fail("http.ca_certificates", format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                fail(
                    "http.ca_certificates",
                    format!("{}: not PEM certificates: {e}", path.display()),
                )
            })?;
            if certs.is_empty() {
                return Err(fail(
                    "http.ca_certificates",
                    format!("{}: no certificate in it", path.display()),
                ));
            }
            Some(pem)
        }
        None => None,
    };
    let client_identity = match raw_http.client_certificate {
        Some(reference) => {
            let pair = resolve_key_pair(&reference, partners_dir, keystore)
                .map_err(|r| fail("http.client_certificate", r))?;
            let unusable =
                |e: &dyn std::fmt::Display| fail("http.client_certificate", e.to_string());
            let key = pair
                .key
                .private_key_to_pem_pkcs8()
                .map_err(|e| unusable(&e))?;
            let cert = pair.cert.to_pem().map_err(|e| unusable(&e))?;
            Some(reqwest::Identity::from_pkcs8_pem(&cert, &key).map_err(|e| unusable(&e))?)
        }
        None => None,
    };
    let timeout = raw_http.timeout_seconds.unwrap_or(60);
    if !(1..=3600).contains(&timeout) {
        return Err(fail("http.timeout_seconds", "must be 1 to 3600".into()));
    }
    let raw_retry = raw.retry.unwrap_or_default();
    let retry = RetryPolicy {
        first_delay: Duration::from_secs(raw_retry.first_delay_seconds.unwrap_or(60)),
        max_delay: Duration::from_secs(raw_retry.max_delay_seconds.unwrap_or(3600)),
        give_up_after: Duration::from_secs(
            raw_retry
                .give_up_after_hours
                .unwrap_or(48)
                .saturating_mul(3600),
        ),
    };
    if retry.first_delay.is_zero() || retry.max_delay < retry.first_delay {
        return Err(fail(
            "retry",
            "first_delay_seconds must be at least 1 and at most max_delay_seconds".into(),
        ));
    }
    if retry.give_up_after.is_zero() {
        return Err(fail(
            "retry.give_up_after_hours",
            "must be at least 1".into(),
        ));
    }
    let as2_from = raw.as2_from;
    Ok(PartnerProfile {
        name: name.to_string(),
        file,
        url: raw.url,
        subject: raw
            .subject
            .unwrap_or_else(|| format!("AS2 message from {as2_from}")),
        as2_from,
        as2_to: raw.as2_to,
        content_type: raw
            .content_type
            .unwrap_or_else(|| "application/edi-consent".into()),
        sign,
        encrypt,
        compression,
        mdn: MdnSettings {
            mode,
            signed,
            partner_certificates,
            async_url,
            async_wait,
            unsigned_compressed_mic,
        },
        http: HttpSettings {
            timeout: Duration::from_secs(timeout),
            headers,
            basic_auth,
            ca_pem,
            client_identity,
        },
        retry,
        sha256,
    })
}

impl PartnerProfile {
    /// The message to build for one document.
    pub fn outbound<'a>(
        &'a self,
        payload: &'a [u8],
        file_name: Option<&'a str>,
        subject: &'a str,
        message_id: &str,
    ) -> Outbound<'a> {
        let signed = self.mdn.signed;
        Outbound {
            payload,
            content_type: &self.content_type,
            file_name,
            from: &self.as2_from,
            to: &self.as2_to,
            subject,
            message_id: Some(message_id.to_string()),
            compression: self.compression,
            sign: self.sign.as_ref().map(|s| SignWith {
                key: &s.key,
                digest: s.digest,
                scheme: s.scheme,
            }),
            encrypt: self.encrypt.as_ref().map(|e| EncryptFor {
                cert: &e.certificate,
                cipher: e.cipher,
                transport: e.transport,
            }),
            mdn: match self.mdn.mode {
                MdnMode::None => MdnRequest::None,
                MdnMode::Sync => MdnRequest::Sync { signed },
                MdnMode::Async => MdnRequest::Async {
                    url: self.mdn.async_url.clone().unwrap_or_default(),
                    signed,
                },
            },
            notification_to: &self.as2_from,
            unsigned_compressed_mic: self.mdn.unsigned_compressed_mic,
        }
    }

    /// A new Message-ID for a document to this partner, with brackets.
    pub fn new_message_id(&self) -> String {
        format!(
            "<{}@{}>",
            uuid::Uuid::new_v4(),
            atom_connectors::as2::mdn::id_domain(&self.as2_from)
        )
    }

    /// The blocking HTTP client of this profile (TLS trust, client
    /// certificate, timeout). Not inside an async runtime.
    pub fn http_client(&self) -> Result<reqwest::blocking::Client, String> {
        let mut builder = reqwest::blocking::Client::builder()
            .user_agent(concat!("Atom-AS2/", env!("CARGO_PKG_VERSION")))
            .timeout(self.http.timeout)
            .connect_timeout(self.http.timeout.min(Duration::from_secs(30)))
            // A partner's URL is what it is: no redirects to elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &self.http.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("http.ca_certificates: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(identity) = &self.http.client_identity {
            builder = builder.identity(identity.clone());
        }
        builder
            .build()
            .map_err(|e| format!("setting up the HTTP client for partner {}: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let policy = RetryPolicy {
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(10),
            give_up_after: Duration::from_secs(3600),
        };
        let delays: Vec<u64> = (1..=6).map(|n| policy.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 10, 10, 10]);
        assert_eq!(policy.delay_after(u32::MAX).as_secs(), 10);
    }

    #[test]
    fn profiles_refuse_what_cannot_work_with_the_key_and_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keystore = Keystore::open(&dir.path().join("data"));
        let partners = dir.path().join("partners");
        std::fs::create_dir_all(&partners).expect("dir");
        let cases = [
            ("url: ftp://x/\nas2_from: A\nas2_to: B\n", "url"),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nmdn: {mode: async}\n",
                "mdn.url",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nmdn: {mode: fax}\n",
                "mdn.mode",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\ncompress: yes\n",
                "compress",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nmdn: {signed: true}\n",
                "mdn.partner_certificates",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nhttp: {headers: {AS2-To: C}}\n",
                "http.headers.AS2-To",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nsign: {key: keystore:none}\n",
                "sign.key",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nretry: {first_delay_seconds: 0}\n",
                "retry",
            ),
            (
                "url: http://x/\nas2_from: A\nas2_to: B\nsurprise: 1\n",
                "(yaml)",
            ),
        ];
        for (i, (yaml, key)) in cases.iter().enumerate() {
            let name = format!("p{i}");
            std::fs::write(profile_path(&partners, &name), yaml).expect("write");
            let e = load(&partners, &name, &keystore).expect_err(yaml);
            assert_eq!(&e.key, key, "{yaml}: {e}");
        }
        let e = load(&partners, "../etc", &keystore).expect_err("bad name");
        assert_eq!(e.key, "(name)");
        let e = load(&partners, "missing", &keystore).expect_err("missing");
        assert!(e.to_string().contains("cannot read it"), "{e}");

        std::fs::write(
            profile_path(&partners, "plain"),
            "url: http://127.0.0.1:1/as2\nas2_from: US\nas2_to: THEM\nmdn: {mode: none}\n",
        )
        .expect("write");
        let p = load(&partners, "plain", &keystore).expect("loads");
        assert_eq!(p.mdn.mode, MdnMode::None);
        assert_eq!(p.subject, "AS2 message from US");
        assert_eq!(p.retry.give_up_after, Duration::from_secs(48 * 3600));
        assert!(p.new_message_id().ends_with('>'));
    }
}
