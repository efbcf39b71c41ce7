//! `POST /as2`: the AS2 receive path, end to end. The only module that
//! knows both HTTP and AS2.
//!
//! ```text
//! required headers ─▶ route (AS2-To, AS2-From) ─▶ listener state ─▶ IP filter,
//! Basic auth, client certificate, size ─▶ body ─▶ duplicate? ─▶ unwrap ─▶ MDN
//! ─▶ raw request + payload fsync'd ─▶ message logged ─▶ response (sync MDN,
//! or 200 and the MDN queued for asynchronous delivery)
//! ```
//!
//! HTTP statuses: 400 missing/invalid header (and a refused message when no
//! MDN was asked for), 401 Basic authentication, 403 IP filter, client
//! certificate or unknown partner without an MDN request, 404 unknown
//! account, 413 too large, 503 paused or errored listener (with Retry-After
//! when paused). Everything the partner's AS2 product should see as an AS2
//! outcome is an MDN in a 200 response.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use atom_connectors::as2::error::ErrorModifier;
use atom_connectors::as2::headers::{
    parse_as2_id, DispositionNotificationOptions, Headers, MicAlg,
};
use atom_connectors::as2::mdn::{self, Disposition, MdnInput};
use atom_connectors::as2::stream;
use atom_connectors::as2::unwrap::{self, Compression, Opened, Payload};
use atom_connectors::As2Error;
use base64::Engine;

use super::body::{self, Body, BodyError};
use super::client_address::{self, ClientAddress};
use super::mdn_delivery::Delivery;
use super::tls::PeerCertificate;
use super::AppState;
use crate::listeners::bundle::ListenerSpec;
use crate::listeners::registry::Routed;
use crate::listeners::ListenerState;
use crate::process::execution::{new_execution_id, Job, TrackedProperties};
use crate::store::documents::{Part, Piece};
use crate::store::{status, Committed, ExecutionRecord, MessageRecord, Receipt, StoredReceipt};

/// How long a sender should wait before retrying a paused listener.
const RETRY_AFTER_SECONDS: &str = "60";
/// How long a copy of a message waits for the first copy to be stored
/// before it is answered 503.
const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A response and the outcome label for logs and metrics.
pub(super) struct Outcome {
    pub(super) response: HttpResponse,
    pub(super) label: &'static str,
}

/// 503 with Retry-After: nothing was stored, the sender should resend.
pub(super) fn retry_later(
    label: &'static str,
    seconds: &'static str,
    text: impl Into<String>,
) -> Outcome {
    let mut out = plain(StatusCode::SERVICE_UNAVAILABLE, label, text);
    out.response.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static(seconds),
    );
    out
}

pub(super) fn plain(status: StatusCode, label: &'static str, text: impl Into<String>) -> Outcome {
    let text = text.into();
    Outcome {
        response: HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(text + "\n"),
        label,
    }
}

/// `POST /as2` and `POST /as2/{target}`.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if super::outbound_mdn::is_receipt(&req) {
        return super::outbound_mdn::receive(req, payload, state).await;
    }
    let started = Instant::now();
    let _receiving = super::Receiving::enter(&state.receiving);
    let outcome = match req.match_info().get("target") {
        Some(target) if !state.accepts_target(target) => plain(
            StatusCode::NOT_FOUND,
            "unknown_account",
            format!("no AS2 endpoint /as2/{target} on this Atom"),
        ),
        _ => match client_of(&req, &state) {
            Err(reason) => {
                tracing::warn!(peer = ?req.peer_addr(), %reason, "request refused");
                plain(StatusCode::BAD_REQUEST, "bad_request", reason)
            }
            Ok(client) => {
                let limit = state.config.web.limits.max_requests_per_address;
                match client.map(|c| state.per_address.enter(c.client, limit)) {
                    Some(None) => {
                        let mut out = retry_later(
                            "too_many_requests",
                            "10",
                            format!(
                            "this address has {limit} AS2 requests under way already; retry later"
                        ),
                        );
                        out.response
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                        out
                    }
                    slot => {
                        let outcome = handle(&req, payload, &state, client).await;
                        drop(slot);
                        outcome
                    }
                }
            }
        },
    };
    state
        .metrics
        .observe(outcome.label, started.elapsed().as_secs_f64());
    outcome.response
}

/// The client behind the peer address (a trusted load balancer's
/// `X-Forwarded-For`); `None` when the peer address is unknown.
fn client_of(req: &HttpRequest, state: &AppState) -> Result<Option<ClientAddress>, String> {
    req.peer_addr()
        .map(|peer| {
            client_address::resolve(
                peer.ip(),
                req.headers(),
                state.config.web.trusted_proxies.as_ref(),
            )
        })
        .transpose()
}

pub(super) fn collect_headers(req: &HttpRequest) -> Headers {
    req.headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// 503 while this Atom cannot take a message at all: draining, or a store
/// that cannot commit.
pub(super) fn unavailable(state: &AppState) -> Option<Outcome> {
    if state.shutdown.is_triggered() {
        return Some(retry_later(
            "draining",
            "30",
            "this Atom is shutting down; retry later",
        ));
    }
    state.health.fault().map(|fault| {
        retry_later(
            "store_unavailable",
            fault.kind.retry_after_seconds(),
            format!(
                "messages cannot be stored right now ({}); retry later",
                fault.reason
            ),
        )
    })
}

/// The body size a listener accepts: its own limit, never above the server's.
pub(super) fn size_limit(listener: Option<u64>, state: &AppState) -> u64 {
    let server = state.config.web.max_request_size;
    listener.unwrap_or(server).min(server)
}

/// 413 when the declared Content-Length is over `limit`.
pub(super) fn declared_too_large(
    headers: &actix_web::http::header::HeaderMap,
    limit: u64,
) -> Option<Outcome> {
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    (length > limit).then(|| {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request of {length} bytes exceeds the limit of {limit} bytes"),
        )
    })
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    client: Option<ClientAddress>,
) -> Outcome {
    if let Some(refusal) = unavailable(state) {
        return refusal;
    }
    let headers = collect_headers(req);
    for required in ["AS2-From", "AS2-To", "Message-ID", "Content-Type"] {
        if headers.get(required).is_none_or(|v| v.trim().is_empty()) {
            return plain(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("missing required AS2 header {required}"),
            );
        }
    }
    let (from, to) = match (
        parse_as2_id(headers.get("AS2-From").unwrap_or_default()),
        parse_as2_id(headers.get("AS2-To").unwrap_or_default()),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid AS2-From: {e}"),
            )
        }
        (_, Err(e)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid AS2-To: {e}"),
            )
        }
    };
    let message_id = headers
        .get("Message-ID")
        .unwrap_or_default()
        .trim()
        .to_string();
    let request = MdnRequest::from_headers(&headers);

    let Some(routed) = state.registry.route(&to, &from) else {
        tracing::warn!(as2_from = %from, as2_to = %to, %message_id, "no listener for this partner pair");
        let text = format!("no AS2 listener for AS2-To {to:?} / AS2-From {from:?}");
        if request.requested && request.async_url.is_none() {
            // The partner's product reads MDNs better than HTTP errors.
            let built = mdn::build(&MdnInput {
                reporting_ua: &state.reporting_ua,
                our_id: &to,
                partner_id: &from,
                original_message_id: &message_id,
                disposition: Disposition::Error(ErrorModifier::AuthenticationFailed),
                mic: None,
                text: &text,
                sign: None,
                micalg_spelling: None,
            });
            if let Ok(built) = built {
                return Outcome {
                    response: mdn_response(&built.headers, built.body),
                    label: "unknown_partner",
                };
            }
        }
        return plain(StatusCode::FORBIDDEN, "unknown_partner", text);
    };
    let Routed {
        spec,
        state: listener_state,
        counters,
    } = routed;
    match listener_state {
        ListenerState::Listening => {}
        ListenerState::Paused => {
            return retry_later(
                "paused",
                RETRY_AFTER_SECONDS,
                format!("listener {} is paused; retry later", spec.id),
            )
        }
        ListenerState::Errored(e) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "errored",
                format!("listener {} is errored: {e}", spec.id),
            )
        }
    }
    if let Some(refusal) = check_access(req, &spec, client) {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(listener = %spec.id, as2_from = %from, %message_id, reason = %refusal.label, "request refused");
        return refusal;
    }
    let limit = size_limit(spec.max_request_size, state);
    if let Some(refusal) = declared_too_large(req.headers(), limit) {
        return refusal;
    }
    // Low_Latency_Debug quotas are checked before anything is stored, so a
    // refusal is a plain 503 the sender retries.
    let admission = match state.executor.admit(&spec).await {
        Ok(admission) => admission,
        Err(refusal) => {
            tracing::warn!(listener = %spec.id, %message_id, reason = %refusal, "refused by Atom Worker quota");
            return retry_later("quota", "5", refusal.to_string());
        }
    };
    // Rendered now: a spooled body's file starts with them and becomes the
    // stored raw request.
    let raw_headers = render_headers(&headers);
    let body = match body::read(
        payload,
        limit,
        &state.config.data_dir.join("spool"),
        &state.config.web.limits,
        raw_headers.as_bytes(),
    )
    .await
    {
        Ok(body) => body,
        Err(BodyError::TooSlow(reason)) => {
            tracing::warn!(listener = %spec.id, %message_id, %reason, client = ?client.map(|c| c.client), peer = ?req.peer_addr(), "request body too slow; cut");
            let mut out = plain(StatusCode::REQUEST_TIMEOUT, "too_slow", reason);
            out.response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return out;
        }
        Err(BodyError::TooLarge { limit }) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request exceeds the limit of {limit} bytes"),
            )
        }
        Err(BodyError::Client(e)) => return plain(StatusCode::BAD_REQUEST, "bad_request", e),
        Err(BodyError::Io(e)) => {
            tracing::error!(error = %e, "spooling request");
            return retry_later(
                "internal_error",
                "30",
                "temporary storage failure; retry later",
            );
        }
    };
    // One copy of a message at a time; a copy that waited finds the first
    // stored and gets its MDN.
    let claim = if spec.reject_duplicates {
        match state.in_flight.claim(&from, &message_id, COPY_WAIT).await {
            Some(claim) => Some(claim),
            None => {
                tracing::info!(listener = %spec.id, as2_from = %from, %message_id, "a copy of this message is still being received; asked to retry");
                return retry_later(
                    "copy_in_flight",
                    "10",
                    format!("message {message_id} is being received right now; retry later"),
                );
            }
        }
    } else {
        None
    };
    let work = Work {
        state: state.clone(),
        spec: spec.clone(),
        headers,
        raw_headers,
        from,
        to,
        message_id,
        request,
    };
    let result = tokio::task::spawn_blocking(move || work.process(&body)).await;
    drop(claim);
    match result {
        Ok(Ok(reply)) => {
            if reply.label == "processed" {
                counters.received.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(job) = reply.execution {
                state.executor.submit(job, admission);
            }
            if let Some(delivery) = reply.delivery {
                state.mdn_sender.send(delivery);
            }
            Outcome {
                response: reply.response.into_response(),
                label: reply.label,
            }
        }
        Ok(Err(e)) => {
            // Nothing was acknowledged: the sender may retry safely.
            tracing::error!(listener = %spec.id, error = %e, "storing the message failed");
            retry_later(
                "store_unavailable",
                e.kind.retry_after_seconds(),
                format!("message not stored ({e}); retry later"),
            )
        }
        Err(e) => {
            tracing::error!(listener = %spec.id, error = %e, "receive task failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error; retry later",
            )
        }
    }
}

/// IP filter, Basic authentication and client certificate, in that order.
fn check_access(
    req: &HttpRequest,
    spec: &ListenerSpec,
    client: Option<ClientAddress>,
) -> Option<Outcome> {
    if let Some(filter) = &spec.ip_filter {
        let peer: Option<IpAddr> = client.map(|c| c.client);
        if !peer.is_some_and(|ip| filter.allows(ip)) {
            let shown = peer
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "unknown".into());
            return Some(plain(
                StatusCode::FORBIDDEN,
                "ip_refused",
                format!("address {shown} may not send to this listener"),
            ));
        }
    }
    if let Some((user, password)) = &spec.basic_auth {
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        // RFC 7617: the scheme name is case-insensitive.
        let given = req
            .headers()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let credentials = match given.iter().position(|b| *b == b' ') {
            Some(space) if given[..space].eq_ignore_ascii_case(b"basic") => {
                given[space + 1..].trim_ascii()
            }
            _ => &[],
        };
        let ok = credentials.len() == expected.len()
            && openssl::memcmp::eq(credentials, expected.as_bytes());
        if !ok {
            let mut out = plain(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Basic authentication required or credentials wrong",
            );
            out.response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Basic realm=\"AS2\""),
            );
            return Some(out);
        }
    }
    if let Some(pinned) = &spec.client_certificate {
        let presented = req
            .conn_data::<PeerCertificate>()
            .and_then(|c| c.0.to_der().ok());
        let matches = match (presented, pinned.to_der()) {
            (Some(p), Ok(q)) => p == q,
            _ => false,
        };
        if !matches {
            return Some(plain(
                StatusCode::FORBIDDEN,
                "client_cert_refused",
                "this listener requires the partner's TLS client certificate",
            ));
        }
    }
    None
}

/// What the partner asked for in the way of a receipt.
#[derive(Debug, Clone)]
struct MdnRequest {
    requested: bool,
    async_url: Option<String>,
    options: Option<DispositionNotificationOptions>,
}

impl MdnRequest {
    fn from_headers(headers: &Headers) -> MdnRequest {
        MdnRequest {
            requested: headers.get("Disposition-Notification-To").is_some(),
            async_url: headers
                .get("Receipt-Delivery-Option")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            options: headers
                .get("Disposition-Notification-Options")
                .map(DispositionNotificationOptions::parse),
        }
    }

    fn mode(&self) -> &'static str {
        match (self.requested, &self.async_url) {
            (false, _) => "none",
            (true, None) => "sync",
            (true, Some(_)) => "async",
        }
    }
}

/// The blocking part of a receipt: unwrap, MDN, durable write, log.
struct Work {
    state: web::Data<AppState>,
    spec: Arc<ListenerSpec>,
    headers: Headers,
    /// The headers as stored before the body.
    raw_headers: String,
    from: String,
    to: String,
    message_id: String,
    request: MdnRequest,
}

/// What the blocking part decided; turned into an HTTP response after
/// (actix responses are not `Send`).
struct Reply {
    response: ReplyBody,
    label: &'static str,
    delivery: Option<Delivery>,
    /// The execution queued with the receipt, to hand to the workers.
    execution: Option<Job>,
}

enum ReplyBody {
    /// 200 with an MDN.
    Mdn(Headers, Vec<u8>),
    /// 200, empty.
    Empty,
    /// 400 with a reason.
    Refused(String),
}

impl ReplyBody {
    fn into_response(self) -> HttpResponse {
        match self {
            ReplyBody::Mdn(headers, body) => mdn_response(&headers, body),
            ReplyBody::Empty => HttpResponse::Ok().finish(),
            ReplyBody::Refused(text) => HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .body(text),
        }
    }
}

impl Work {
    /// Opens the message: in memory when it arrived in memory, as a
    /// stream from its spool file (payload into a file) when it is large.
    fn open(
        &self,
        body: &Body,
        chosen: Option<&atom_connectors::as2::headers::ChosenMicAlg>,
    ) -> Result<(PayloadDocument, Opened), As2Error> {
        match body {
            Body::Memory(bytes) => unwrap::unwrap(&self.headers, bytes, &self.spec.receive, chosen)
                .map(|u| {
                    let (payload, opened) = u.into_opened();
                    (PayloadDocument::Memory(payload), opened)
                }),
            Body::Spooled { source, .. } => {
                let dir = self.state.config.data_dir.join("spool");
                let file = tempfile::tempfile_in(&dir).map_err(|e| {
                    As2Error::new(
                        atom_connectors::as2::error::ErrorKind::Internal,
                        format!("creating a payload file in {}: {e}", dir.display()),
                    )
                })?;
                stream::unwrap_file(&self.headers, source, &self.spec.receive, chosen, &file)
                    .map(|opened| (PayloadDocument::File(file), opened))
            }
        }
    }

    fn process(self, body: &Body) -> Result<Reply, crate::store::StoreError> {
        let store = &self.state.store;
        if self.spec.reject_duplicates {
            if let Some(receipt) = store.find_receipt(
                &self.spec.id,
                &self.from,
                &self.message_id,
                self.spec.duplicate_window,
            )? {
                return Ok(self.replay(receipt, body));
            }
        }
        let chosen = self
            .request
            .options
            .as_ref()
            .and_then(|o| o.choose_mic_alg());
        let (payload, opened) = match self.open(body, chosen.as_ref()) {
            Ok((payload, opened)) => (Some(payload), Ok(opened)),
            Err(e) => (None, Err(e)),
        };
        let (disposition, text) = match &opened {
            Ok(u) => {
                for warning in &u.warnings {
                    tracing::warn!(listener = %self.spec.id, message_id = %self.message_id, %warning, "accepted with a warning");
                }
                (
                    Disposition::Processed,
                    format!(
                        "The AS2 message {} was received and will be processed.",
                        self.message_id
                    ),
                )
            }
            Err(e) => {
                tracing::warn!(listener = %self.spec.id, message_id = %self.message_id, error = %e, modifier = %e.modifier(), "message refused");
                (
                    Disposition::Error(e.modifier()),
                    format!(
                        "The AS2 message {} could not be processed: {e}",
                        self.message_id
                    ),
                )
            }
        };
        let target_refused = self.async_target_refusal(opened.is_ok());
        let text = match (&target_refused, &self.request.async_url) {
            (Some(reason), Some(url)) => {
                tracing::warn!(listener = %self.spec.id, as2_from = %self.from, message_id = %self.message_id, %url, %reason,
                    "asynchronous MDN target refused; the receipt goes back in the response");
                format!("{text}\r\nThis receipt is returned in the HTTP response, not sent to {url}: {reason}")
            }
            _ => text,
        };
        let async_url = self
            .request
            .async_url
            .clone()
            .filter(|_| target_refused.is_none());
        let built = if self.request.requested {
            Some(self.build_mdn(disposition.clone(), &opened, &text, chosen.as_ref()))
        } else {
            None
        };

        // Durable first: the raw request, the payload and the log row; then the MDN.
        let head = Piece::Bytes(self.raw_headers.as_bytes());
        // A refused request is kept only in part: enough to diagnose it,
        // never a stranger's whole upload.
        let refused_prefix;
        let request = match (body, opened.is_ok()) {
            (Body::Memory(bytes), true) => vec![head, Piece::Bytes(bytes)],
            // The spool file holds the headers, then the body.
            (Body::Spooled { file, .. }, true) => vec![Piece::File(file)],
            (_, false) => {
                refused_prefix = body
                    .prefix(self.state.config.refused_prefix_bytes)
                    .map_err(|e| {
                        crate::store::StoreError::io(
                            "reading the spooled request",
                            &e,
                            e.to_string(),
                        )
                    })?;
                vec![head, Piece::Bytes(&refused_prefix)]
            }
        };
        let mut parts = vec![Part::new("request", request)];
        if let Some(payload) = &payload {
            parts.push(Part::new("payload", vec![payload.piece()]));
        }
        let staged = self.state.documents.stage(&parts)?;
        drop(parts);
        // The temporary copies are not needed any more: dropped (or, the
        // spool file, emptied) now, their dirty pages are discarded instead
        // of being written back by the commit's syncfs.
        drop(payload);
        if let Body::Spooled { file, .. } = body {
            // Unless a file store linked it into place as the document.
            let linked = file
                .metadata()
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0);
            if !linked {
                if let Err(e) = file.set_len(0) {
                    tracing::debug!(error = %e, "emptying the spool file");
                }
            }
        }
        let written = &staged.references;
        let mut record = self.record(body.size(), &opened, &disposition, built.as_ref(), written);
        if let Some(reason) = &target_refused {
            record.mdn_status = "refused".into();
            record.mdn_error = Some(reason.clone());
        }
        if record.mdn_status == "pending" {
            // Delivered by this node, under its lease from this transaction on.
            let leases = self.state.mdn_sender.leases();
            record.mdn_owner = Some(leases.node.clone());
            record.mdn_lease_until_us = Some(leases.until_us());
        }
        if self.spec.reject_duplicates && opened.is_ok() {
            record.dedupe = Some(self.spec.duplicate_window);
        }
        let execution = match (&opened, written.get(1)) {
            (Ok(u), Some(payload)) if !self.spec.process.steps.is_empty() => {
                Some(self.queued_execution(&record, u, payload))
            }
            _ => None,
        };
        // Blocks until the files, the row and the queued execution are
        // durable (shared with concurrent receipts).
        let committed = self.state.committer.commit(Receipt {
            message: record,
            execution: execution.clone(),
        });
        let id = match committed {
            Ok(Committed::Stored(id)) => id,
            Ok(Committed::Duplicate(original)) => {
                // Another node or a copy that got past the claim was first.
                self.state.documents.discard(&staged);
                return Ok(self.replay(original, body));
            }
            // The files stay: after a missed deadline the row may still be
            // committed and point at them.
            Err(e) => return Err(e),
        };
        let execution = execution.map(|mut record| {
            record.message_row = id;
            Job {
                spec: self.spec.clone(),
                record,
            }
        });
        tracing::info!(
            listener = %self.spec.id, record = id, as2_from = %self.from, message_id = %self.message_id,
            disposition = %disposition.render(), mdn = self.request.mode(), bytes = body.size(), "message received"
        );
        let label = if opened.is_ok() { "processed" } else { "error" };
        let mut reply = match (built, &async_url) {
            (Some(mdn), None) => Reply {
                response: ReplyBody::Mdn(mdn.headers, mdn.body),
                label,
                delivery: None,
                execution: None,
            },
            (Some(mdn), Some(url)) => Reply {
                response: ReplyBody::Empty,
                label,
                delivery: Some(Delivery {
                    record_id: id,
                    url: url.clone(),
                    headers: header_pairs(&mdn.headers),
                    body: mdn.body,
                    targets: self.spec.mdn_targets.clone(),
                    // Held from the receipt's transaction on (epoch 1).
                    epoch: Some(1),
                }),
                execution: None,
            },
            (None, _) => match &opened {
                Ok(_) => Reply {
                    response: ReplyBody::Empty,
                    label,
                    delivery: None,
                    execution: None,
                },
                Err(e) => Reply {
                    response: ReplyBody::Refused(format!("{}: {e}\n", e.modifier())),
                    label,
                    delivery: None,
                    execution: None,
                },
            },
        };
        reply.execution = execution;
        Ok(reply)
    }

    /// Why the asynchronous MDN the sender asked for may not be sent where it
    /// asked: only a sender that passed the partner's checks may make us
    /// send requests, and only to allowed targets ([`super::mdn_target`]).
    fn async_target_refusal(&self, accepted: bool) -> Option<String> {
        let url = self.request.async_url.as_ref()?;
        if !self.request.requested {
            return None;
        }
        if !accepted && !self.spec.transport_authenticated {
            return Some(
                "the message failed the partner's checks, so its Receipt-Delivery-Option is not trusted"
                    .into(),
            );
        }
        self.spec.mdn_targets.check(url).err()
    }

    /// The execution that goes into the store with the receipt.
    fn queued_execution(
        &self,
        record: &MessageRecord,
        opened: &Opened,
        payload: &str,
    ) -> ExecutionRecord {
        let mut tracked = TrackedProperties::new();
        tracked.insert("as2_from".into(), record.as2_from.clone());
        tracked.insert("as2_to".into(), record.as2_to.clone());
        tracked.insert("message_id".into(), record.message_id.clone());
        tracked.insert("mime_type".into(), opened.content_type.clone());
        // Always present (empty when the sender gave none), so templates can rely on them.
        tracked.insert("subject".into(), record.subject.clone().unwrap_or_default());
        tracked.insert(
            "file_name".into(),
            opened.file_name.clone().unwrap_or_default(),
        );
        let now = time::OffsetDateTime::now_utc();
        let leases = self.state.executor.leases();
        ExecutionRecord {
            id: new_execution_id(),
            process: self.spec.id.clone(),
            version: self.spec.version.clone(),
            mode: self.state.executor.mode_of(&self.spec).as_str().into(),
            status: status::STARTED.into(),
            properties_json: serde_json::to_string(&tracked).unwrap_or_default(),
            payload_path: payload.to_string(),
            queued_at: record.received_at.clone(),
            queued_at_us: (now.unix_timestamp_nanos() / 1000) as i64,
            input_documents: 1,
            input_bytes: opened.payload_len,
            // Held by this node from the receipt's own transaction on.
            owner: Some(leases.node.clone()),
            lease_until_us: Some(leases.until_us()),
            lease_epoch: 1,
            ..ExecutionRecord::default()
        }
    }

    fn build_mdn(
        &self,
        disposition: Disposition,
        opened: &Result<Opened, As2Error>,
        text: &str,
        chosen: Option<&atom_connectors::as2::headers::ChosenMicAlg>,
    ) -> mdn::BuiltMdn {
        let wants_signed = self
            .request
            .options
            .as_ref()
            .is_some_and(|o| o.wants_signed_receipt());
        let digest = chosen.map(|c| c.alg).unwrap_or(MicAlg::Sha256);
        let sign = match (&self.spec.mdn_signing_key, wants_signed) {
            (Some(key), true) => Some((key, digest)),
            (None, true) => {
                tracing::warn!(listener = %self.spec.id, "signed receipt requested but no mdn_signing_key configured; sending it unsigned");
                None
            }
            _ => None,
        };
        let mic = opened.as_ref().ok().map(|u| &u.mic);
        let input = MdnInput {
            reporting_ua: &self.state.reporting_ua,
            our_id: &self.to,
            partner_id: &self.from,
            original_message_id: &self.message_id,
            disposition: disposition.clone(),
            mic,
            text,
            sign,
            micalg_spelling: chosen.map(|c| c.spelling.as_str()),
        };
        match mdn::build(&input) {
            Ok(built) => built,
            Err(e) => {
                // Signing failed (bad key): an unsigned receipt still tells the truth.
                tracing::error!(listener = %self.spec.id, error = %e, "signing the MDN failed; sending it unsigned");
                let unsigned = MdnInput {
                    sign: None,
                    ..input
                };
                mdn::build(&unsigned).unwrap_or_else(|_| mdn::BuiltMdn {
                    headers: Headers::new(),
                    body: Vec::new(),
                    message_id: String::new(),
                })
            }
        }
    }

    fn record(
        &self,
        request_size: u64,
        opened: &Result<Opened, As2Error>,
        disposition: &Disposition,
        built: Option<&mdn::BuiltMdn>,
        written: &[String],
    ) -> MessageRecord {
        let ok = opened.as_ref().ok();
        MessageRecord {
            listener: Some(self.spec.id.clone()),
            as2_from: self.from.clone(),
            as2_to: self.to.clone(),
            message_id: self.message_id.clone(),
            subject: self.headers.get("Subject").map(str::to_string),
            file_name: ok.and_then(|u| u.file_name.clone()),
            mime_type: ok.map(|u| u.content_type.clone()),
            request_size,
            payload_size: ok.map(|u| u.payload_len),
            encryption: ok.and_then(|u| u.encryption.as_ref().map(|e| e.algorithm.clone())),
            signature: ok.and_then(|u| {
                u.signature.as_ref().map(|s| {
                    s.digest
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "signed".into())
                })
            }),
            compression: ok.and_then(|u| {
                u.compression.map(|c| match c {
                    Compression::BeforeSigning => "before-signing".to_string(),
                    Compression::AfterSigning => "after-signing".to_string(),
                    Compression::Unsigned => "unsigned".to_string(),
                })
            }),
            mic: ok.map(|u| u.mic.render()),
            disposition: disposition.render(),
            mdn_mode: self.request.mode().into(),
            mdn_status: match self.request.mode() {
                "none" => "none",
                "sync" => "sent",
                _ => "pending",
            }
            .into(),
            mdn_url: self.request.async_url.clone(),
            mdn_error: None,
            mdn_owner: None,
            mdn_lease_until_us: None,
            mdn_headers: built.map(|b| header_pairs(&b.headers)).unwrap_or_default(),
            mdn_body: built.map(|b| b.body.clone()).unwrap_or_default(),
            raw_path: written.first().cloned(),
            payload_path: written.get(1).cloned(),
            error: opened.as_ref().err().map(|e| e.to_string()),
            received_at: now_rfc3339(),
            dedupe: None,
        }
    }

    /// Answers a duplicate with the receipt it got the first time.
    fn replay(&self, receipt: StoredReceipt, body: &Body) -> Reply {
        let same = receipt
            .raw_path
            .as_deref()
            .and_then(|reference| match body {
                Body::Memory(bytes) => self.state.documents.ends_with(reference, bytes),
                Body::Spooled { file, source } => {
                    // Emptied once staged (a copy that lost the commit
                    // race): then the comparison is unknown.
                    let head = file.metadata().ok()?.len().checked_sub(source.len())?;
                    if head != self.raw_headers.len() as u64 {
                        return None;
                    }
                    // SAFETY: the spool file is private to this request
                    // (anonymous, or linked as the document of a copy that
                    // lost the race and is discarded); nothing changes it
                    // while mapped.
                    let map = unsafe { memmap2::Mmap::map(&**file) }.ok()?;
                    self.state
                        .documents
                        .ends_with(reference, &map[head as usize..])
                }
            });
        match same {
            Some(false) => tracing::warn!(
                listener = %self.spec.id, as2_from = %self.from, message_id = %self.message_id, original = receipt.record_id,
                "suspicious duplicate: same Message-ID, different content; answered with the original receipt, not processed"
            ),
            _ => tracing::info!(
                listener = %self.spec.id, as2_from = %self.from, message_id = %self.message_id, original = receipt.record_id,
                "duplicate message: original receipt returned, not processed again"
            ),
        }
        let headers: Headers = receipt.headers.iter().cloned().collect();
        match (receipt.mdn_mode.as_str(), receipt.mdn_url) {
            ("sync", _) => Reply {
                response: ReplyBody::Mdn(headers, receipt.body),
                label: "duplicate",
                execution: None,
                delivery: None,
            },
            ("async", Some(url)) if self.spec.mdn_targets.check(&url).is_ok() => Reply {
                response: ReplyBody::Empty,
                label: "duplicate",
                execution: None,
                delivery: Some(Delivery {
                    record_id: receipt.record_id,
                    url,
                    headers: receipt.headers,
                    body: receipt.body,
                    targets: self.spec.mdn_targets.clone(),
                    // Sent again on request; the original keeps its lease.
                    epoch: None,
                }),
            },
            // Its target was refused the first time: answered in the response then too.
            ("async", Some(_)) => Reply {
                response: ReplyBody::Mdn(headers, receipt.body),
                label: "duplicate",
                execution: None,
                delivery: None,
            },
            _ => Reply {
                response: ReplyBody::Empty,
                label: "duplicate",
                execution: None,
                delivery: None,
            },
        }
    }
}

/// A payload to store: opened in memory, or streamed into a file.
enum PayloadDocument {
    Memory(Payload),
    File(std::fs::File),
}

impl PayloadDocument {
    fn piece(&self) -> Piece<'_> {
        match self {
            PayloadDocument::Memory(payload) => Piece::Bytes(payload.as_slice()),
            PayloadDocument::File(file) => Piece::File(file),
        }
    }
}

fn header_pairs(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

pub(super) fn render_headers(headers: &Headers) -> String {
    let mut out = String::new();
    for (name, value) in headers.iter() {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

fn mdn_response(headers: &Headers, body: Vec<u8>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    for (name, value) in headers.iter() {
        response.insert_header((name.to_string(), value.to_string()));
    }
    response.body(body)
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
