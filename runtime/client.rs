//! The AS2 client side over HTTP: POST a built message, read the response,
//! check the receipt (MDN) against what was sent, and receive asynchronous
//! MDNs on a small local HTTP endpoint.
//!
//! Used by `atom send`; the message itself is built by
//! [`atom_connectors::as2::build`], which does no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use atom_connectors::as2::headers::Headers;
use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use atom_connectors::as2::mic::Mic;
use openssl::x509::X509;
use tokio::sync::oneshot;

/// The largest response body read (an MDN is a few KiB; error pages are cut).
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// The largest asynchronous MDN accepted by the receiver.
const MAX_ASYNC_MDN: usize = 1024 * 1024;

/// Errors setting the client or the receiver up (not per-message failures).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{0}")]
    Tls(String),
    #[error("cannot listen for asynchronous MDNs on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// HTTP settings of the client.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Whole-request timeout (connect, send, response).
    pub timeout: Option<Duration>,
    /// Accept any server certificate and host name (testing only).
    pub insecure: bool,
    /// Extra trusted CA certificates, PEM (one or many).
    pub ca_pem: Option<Vec<u8>>,
    /// HTTP Basic authentication.
    pub basic_auth: Option<(String, String)>,
    /// Keep at most this many idle connections to the partner.
    pub max_idle: usize,
    /// Our TLS client certificate and private key.
    pub identity: Option<reqwest::Identity>,
}

/// What came back from the partner's server.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP 500 Internal Server Error: <first line(s) of the body>`.
    pub fn describe_error(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut text: String = text.chars().take(300).collect();
        if text.is_empty() {
            text = "(empty body)".into();
        }
        format!("HTTP {} {}: {}", self.status, self.reason, text)
    }
}

/// Posts AS2 messages to one URL, reusing connections.
#[derive(Clone)]
pub struct As2Client {
    http: reqwest::Client,
    url: reqwest::Url,
    basic_auth: Option<(String, String)>,
}

impl As2Client {
    pub fn new(url: &str, options: &HttpOptions) -> Result<As2Client, ClientError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| ClientError::Url {
            url: url.into(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Url {
                url: url.into(),
                reason: "only http:// and https:// are supported".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("Atom-AS2/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(options.max_idle.max(1))
            .connect_timeout(
                options
                    .timeout
                    .unwrap_or(Duration::from_secs(30))
                    .min(Duration::from_secs(30)),
            );
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        if options.insecure {
            builder = builder
                .tls_danger_accept_invalid_certs(true)
                .tls_danger_accept_invalid_hostnames(true);
        }
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::Tls(format!("--cacert: not a PEM certificate bundle: {e}"))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Tls(
                    "--cacert: no certificate in the file".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(identity) = &options.identity {
            builder = builder.identity(identity.clone());
        }
        let http = builder.build().map_err(|e| {
            ClientError::Tls(format!(
                "cannot set up the HTTP client: {}",
                describe_reqwest(&e)
            ))
        })?;
        Ok(As2Client {
            http,
            url: parsed,
            basic_auth: options.basic_auth.clone(),
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// POSTs one message. `Err` is a transport failure (no HTTP response).
    pub async fn post(&self, headers: &Headers, body: Bytes) -> Result<Response, String> {
        let mut request = self.http.post(self.url.clone());
        for (name, value) in headers.iter() {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not valid HTTP"))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                format!("header {name}: value {value:?} is not valid HTTP (use ASCII)")
            })?;
            request = request.header(name, value);
        }
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| describe_reqwest(&e))?;
        let status = response.status();
        let mut response_headers = Headers::new();
        for (name, value) in response.headers() {
            response_headers.push(
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        tracing::warn!(limit = MAX_RESPONSE_BODY, "response body cut at the limit");
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("HTTP {status}, then {}", describe_reqwest(&e))),
            }
        }
        Ok(Response {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            headers: response_headers,
            body,
        })
    }
}

/// A reqwest error as one line: what failed, where, and the root cause
/// (`cannot connect to 127.0.0.1:1: Connection refused (os error 111)`).
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let target = e
        .url()
        .map(|u| {
            format!(
                " to {}",
                u.host_str()
                    .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
                    .unwrap_or_else(|| u.to_string())
            )
        })
        .unwrap_or_default();
    let mut root = None;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    let what = if e.is_timeout() {
        format!("request{target} timed out")
    } else if e.is_connect() {
        format!("cannot connect{target}")
    } else if e.is_body() || e.is_decode() {
        format!("reading the response{target} failed")
    } else if e.is_builder() {
        "invalid request".to_string()
    } else {
        format!("HTTP exchange{target} failed")
    };
    match root {
        Some(root) if !e.is_timeout() || !root.contains("timed out") => format!("{what}: {root}"),
        _ => what,
    }
}

/// What the receipt for one message must show.
#[derive(Debug, Clone)]
pub struct MdnExpectation<'a> {
    /// Message-ID as sent, with angle brackets.
    pub message_id: &'a str,
    /// The MIC the receiver should compute.
    pub mic: &'a Mic,
    /// We asked for a signed receipt.
    pub signed_requested: bool,
    /// The message was signed (then a signed receipt must carry a MIC).
    pub message_signed: bool,
    /// Pinned certificates of the partner, to verify a signed receipt.
    pub partner_certs: &'a [X509],
}

/// A receipt that passed every check.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub disposition: Disposition,
    pub signed: bool,
    /// Subject of the certificate that verified the signature.
    pub verified_by: Option<String>,
    /// The returned MIC matched the expected one.
    pub mic_verified: bool,
    pub mic: Option<Mic>,
    /// Things an operator should know that do not fail the message.
    pub warnings: Vec<String>,
}

/// Why a message failed: a reason fit for one output line, and, for a
/// negative receipt, the disposition.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub disposition: Option<String>,
}

impl Failure {
    pub fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            disposition: None,
        }
    }
}

/// A Message-ID without its angle brackets (and surrounding spaces).
pub fn bare_id(id: &str) -> &str {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

/// Parses and checks a receipt: signature (when signed and a certificate is
/// known), Original-Message-ID, disposition, and the Received-Content-MIC.
pub fn verify_mdn(
    content_type: Option<&str>,
    body: &[u8],
    expect: &MdnExpectation<'_>,
) -> Result<Receipt, Failure> {
    let content_type =
        content_type.ok_or_else(|| Failure::new("the MDN has no Content-Type header"))?;
    let trust = if expect.partner_certs.is_empty() {
        MdnTrust::Skip
    } else {
        MdnTrust::Verify(expect.partner_certs)
    };
    let parsed = mdn::parse(content_type, body, trust)
        .map_err(|e| Failure::new(format!("unusable MDN: {e}")))?;
    let mut warnings = Vec::new();
    if expect.signed_requested && !parsed.signed {
        return Err(Failure {
            reason: format!(
                "asked for a signed receipt but the MDN is unsigned (disposition: {})",
                outcome(&parsed.disposition_raw)
            ),
            disposition: Some(outcome(&parsed.disposition_raw)),
        });
    }
    if parsed.signed && parsed.verified.is_none() {
        warnings.push(
            "MDN signature not verified: no partner certificate (give --partner-cert)".to_string(),
        );
    }
    if let Some(v) = &parsed.verified {
        if v.signer_expired {
            warnings.push(format!(
                "the partner certificate {} is outside its validity period",
                v.signer_subject
            ));
        }
    }
    match parsed.original_message_id.as_deref() {
        Some(id) if bare_id(id) == bare_id(expect.message_id) => {}
        Some(id) => {
            return Err(Failure::new(format!(
                "MDN is for another message: Original-Message-ID {id}, sent {}",
                expect.message_id
            )));
        }
        None => warnings.push("MDN has no Original-Message-ID".to_string()),
    }
    if !parsed.disposition.is_positive() {
        let disposition = outcome(&parsed.disposition_raw);
        let mut reason = format!("negative MDN: {disposition}");
        if !parsed.text.is_empty() {
            let text: String = parsed.text.split_whitespace().collect::<Vec<_>>().join(" ");
            reason.push_str(&format!(
                " ({})",
                text.chars().take(200).collect::<String>()
            ));
        }
        return Err(Failure {
            reason,
            disposition: Some(disposition),
        });
    }
    if let Disposition::ProcessedWithWarning(w) = &parsed.disposition {
        warnings.push(format!("processed with warning: {w}"));
    }
    let mic_verified = match &parsed.received_mic {
        Some(got) if got.matches(expect.mic) => true,
        Some(got) => {
            let detail = if got.alg != expect.mic.alg {
                " (the receiver used another digest algorithm)"
            } else {
                ""
            };
            return Err(Failure {
                reason: format!(
                    "MIC mismatch: expected {} got {}{detail}",
                    expect.mic.render(),
                    got.render()
                ),
                disposition: Some(outcome(&parsed.disposition_raw)),
            });
        }
        // A resend the partner had already: its duplicate warning may come
        // before it verified anything, so without a MIC. The partner has
        // the message; the first receipt was lost.
        None if is_duplicate_warning(&parsed.disposition) => {
            warnings.push(
                "the partner reports a duplicate: it had this Message-ID already (its receipt carries no MIC)".to_string(),
            );
            false
        }
        None if expect.message_signed && expect.signed_requested => {
            return Err(Failure {
                reason: "the signed receipt carries no Received-Content-MIC, so it does not prove what arrived".into(),
                disposition: Some(outcome(&parsed.disposition_raw)),
            });
        }
        // An unsigned receipt for an unsigned message need not carry one.
        None if !expect.message_signed && !expect.signed_requested => false,
        None => {
            warnings.push("no Received-Content-MIC in the receipt".to_string());
            false
        }
    };
    Ok(Receipt {
        disposition: parsed.disposition,
        signed: parsed.signed,
        verified_by: parsed.verified.map(|v| v.signer_subject),
        mic_verified,
        mic: parsed.received_mic,
        warnings,
    })
}

/// `processed/warning: duplicate-document` (RFC 4130 section 7.5.3 names it).
fn is_duplicate_warning(disposition: &Disposition) -> bool {
    matches!(disposition, Disposition::ProcessedWithWarning(w)
        if w.to_ascii_lowercase().contains("duplicate"))
}

/// `processed/error: decryption-failed` out of
/// `automatic-action/MDN-sent-automatically; processed/error: decryption-failed`.
fn outcome(disposition_raw: &str) -> String {
    disposition_raw
        .rsplit_once(';')
        .map(|(_, o)| o)
        .unwrap_or(disposition_raw)
        .trim()
        .to_string()
}

/// An asynchronous MDN as it arrived.
#[derive(Debug, Clone)]
pub struct RawMdn {
    pub headers: Headers,
    pub body: Vec<u8>,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<RawMdn>>>>;

/// A local HTTP endpoint receiving asynchronous MDNs (POST to any path).
/// Register the Message-ID with [`MdnListener::expect`] before sending.
pub struct MdnListener {
    url: String,
    local_addr: SocketAddr,
    waiters: Waiters,
    handle: actix_web::dev::ServerHandle,
}

impl MdnListener {
    /// Starts listening on `addr` (port 0 picks one). `advertised` replaces
    /// the URL put in Receipt-Delivery-Option (behind NAT or a proxy).
    /// Must be called inside a tokio runtime.
    pub fn start(addr: SocketAddr, advertised: Option<String>) -> Result<MdnListener, ClientError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ClientError::Listen { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ClientError::Listen { addr, source })?;
        let waiters: Waiters = Arc::default();
        let state = actix_web::web::Data::new(waiters.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(actix_web::web::PayloadConfig::new(MAX_ASYNC_MDN))
                .default_service(actix_web::web::to(receive_mdn))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(|source| ClientError::Listen { addr, source })?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        let url = advertised.unwrap_or_else(|| format!("http://{local_addr}/as2/mdn"));
        tracing::debug!(%local_addr, %url, "listening for asynchronous MDNs");
        Ok(MdnListener {
            url,
            local_addr,
            waiters,
            handle,
        })
    }

    /// The URL to put in Receipt-Delivery-Option.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers a Message-ID; the receiver yields its MDN once it arrives.
    pub fn expect(&self, message_id: &str) -> oneshot::Receiver<RawMdn> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(bare_id(message_id).to_string(), tx);
        }
        rx
    }

    /// Stops waiting for a Message-ID (it failed or timed out).
    pub fn forget(&self, message_id: &str) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(bare_id(message_id));
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn receive_mdn(
    request: actix_web::HttpRequest,
    body: Bytes,
    waiters: actix_web::web::Data<Waiters>,
) -> actix_web::HttpResponse {
    let mut headers = Headers::new();
    for (name, value) in request.headers() {
        headers.push(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let Some(content_type) = headers.get("content-type").map(str::to_string) else {
        return actix_web::HttpResponse::BadRequest().body("no Content-Type: not an MDN\n");
    };
    // Only to route it: the waiting sender verifies the signature itself.
    let original = match mdn::parse(&content_type, &body, MdnTrust::Skip) {
        Ok(parsed) => parsed.original_message_id,
        Err(e) => {
            tracing::warn!(peer = ?request.peer_addr(), error = %e, "received something that is not an MDN");
            return actix_web::HttpResponse::BadRequest().body(format!("not a usable MDN: {e}\n"));
        }
    };
    let Some(original) = original else {
        return actix_web::HttpResponse::BadRequest().body("the MDN has no Original-Message-ID\n");
    };
    let waiter = waiters
        .lock()
        .ok()
        .and_then(|mut w| w.remove(bare_id(&original)));
    match waiter {
        Some(tx) => {
            tracing::debug!(original = %original, "asynchronous MDN received");
            let _ = tx.send(RawMdn {
                headers,
                body: body.to_vec(),
            });
        }
        None => {
            tracing::warn!(original = %original, "asynchronous MDN for a message we are not waiting for")
        }
    }
    actix_web::HttpResponse::Ok().finish()
}
