//! Asynchronous receipts for what `as2` steps sent: `POST /as2/mdn` (the
//! URL partner profiles publish in Receipt-Delivery-Option), or a
//! `multipart/report` POSTed to `/as2`.
//!
//! ```text
//! body (at most 1 MiB, slow clients cut) ─▶ Original-Message-ID ─▶ outbox row
//! awaiting_mdn ─▶ partner profile ─▶ signature, disposition, MIC checked
//! ─▶ row acknowledged or failed (durable) ─▶ 200
//! ```
//!
//! A receipt for a Message-ID we never sent is refused (400) and logged,
//! never taken for a new document. A receipt that fails a check is kept
//! with the row, which fails with the reason; the partner still gets 200,
//! as its receipt was delivered. The execution waiting on the row is woken
//! (on this node; on another node of a Molecule it sees the outcome at its
//! next look, see `process/steps/as2.rs`).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use atom_connectors::as2::headers::{parse_as2_id, Headers};
use atom_connectors::as2::mdn::{self, MdnTrust};
use atom_connectors::as2::mic::Mic;

use super::body::{self, BodyError};
use super::inbound::{collect_headers, plain, render_headers, retry_later, unavailable, Outcome};
use super::AppState;
use crate::client::{bare_id, verify_mdn, MdnExpectation};
use crate::store::outbox::{state, OutboxRow};

/// The largest asynchronous receipt taken (a receipt is a few KiB).
pub const MAX_ASYNC_MDN: u64 = 1024 * 1024;

/// True when a request to `/as2` is a receipt rather than a message.
pub fn is_receipt(req: &HttpRequest) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/report")
        })
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let _receiving = super::Receiving::enter(&state.receiving);
    let outcome = handle(&req, payload, &state).await;
    state
        .metrics
        .observe(outcome.label, started.elapsed().as_secs_f64());
    outcome.response
}

async fn handle(req: &HttpRequest, payload: web::Payload, state: &web::Data<AppState>) -> Outcome {
    if let Some(refusal) = unavailable(state) {
        return refusal;
    }
    let headers = collect_headers(req);
    if headers.get("content-type").is_none() {
        return plain(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no Content-Type: not an MDN",
        );
    }
    let body = match body::read(
        payload,
        MAX_ASYNC_MDN,
        &state.config.data_dir.join("spool"),
        &state.config.web.limits,
        b"",
    )
    .await
    {
        Ok(body) => body,
        Err(BodyError::TooLarge { limit }) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("an MDN of more than {limit} bytes is not taken"),
            )
        }
        Err(BodyError::TooSlow(reason)) => {
            return plain(StatusCode::REQUEST_TIMEOUT, "too_slow", reason)
        }
        Err(BodyError::Client(e)) => return plain(StatusCode::BAD_REQUEST, "bad_request", e),
        Err(BodyError::Io(e)) => {
            tracing::error!(error = %e, "spooling an MDN");
            return retry_later(
                "internal_error",
                "30",
                "temporary storage failure; retry later",
            );
        }
    };
    let bytes = match body.prefix(MAX_ASYNC_MDN as usize) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "reading a spooled MDN");
            return retry_later("internal_error", "30", "temporary failure; retry later");
        }
    };
    let state = state.clone();
    let peer = req.peer_addr();
    match web::block(move || file(&state, &headers, &bytes)).await {
        Ok(Answer::Plain(status, label, text)) => plain(status, label, text),
        Ok(Answer::Retry(label, seconds, text)) => retry_later(label, seconds, text),
        Err(e) => {
            tracing::error!(error = %e, ?peer, "filing an MDN failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error; retry later",
            )
        }
    }
}

/// What to answer, made on a blocking thread (a response is not `Send`).
enum Answer {
    Plain(StatusCode, &'static str, String),
    /// 503 with Retry-After seconds.
    Retry(&'static str, &'static str, String),
}

/// Matches a receipt to the outbox, checks it, and records the outcome.
fn file(state: &AppState, headers: &Headers, body: &[u8]) -> Answer {
    let content_type = headers.get("content-type").unwrap_or_default();
    // Only to find the row: the partner's certificates verify it below.
    let original = match mdn::parse(content_type, body, MdnTrust::Skip) {
        Ok(parsed) => parsed.original_message_id,
        Err(e) => {
            tracing::warn!(error = %e, "received something that is not a usable MDN");
            return Answer::Plain(
                StatusCode::BAD_REQUEST,
                "not_an_mdn",
                format!("not a usable MDN: {e}"),
            );
        }
    };
    let Some(original) = original else {
        return Answer::Plain(
            StatusCode::BAD_REQUEST,
            "not_an_mdn",
            "the MDN has no Original-Message-ID".into(),
        );
    };
    let original = format!("<{}>", bare_id(&original));
    let row = match state.store.outbox_by_message_id(&original) {
        Ok(Some(row)) => row,
        Ok(None) => {
            tracing::warn!(original_message_id = %original, as2_from = ?headers.get("AS2-From"), "MDN for a message this Atom never sent; refused");
            return Answer::Plain(
                StatusCode::BAD_REQUEST,
                "unknown_mdn",
                format!("no message with Message-ID {original} was sent from here"),
            );
        }
        Err(e) => {
            return Answer::Retry(
                "store_unavailable",
                e.kind.retry_after_seconds(),
                format!("the MDN cannot be filed now ({e}); retry later"),
            )
        }
    };
    if let Some(from) = headers.get("AS2-From").and_then(|f| parse_as2_id(f).ok()) {
        if from != row.as2_to {
            tracing::warn!(original_message_id = %original, %from, sent_to = %row.as2_to, "MDN from another partner than the one the message went to; refused");
            return Answer::Plain(
                StatusCode::BAD_REQUEST,
                "unknown_mdn",
                format!(
                    "message {original} was sent to {:?}, not to {from:?}",
                    row.as2_to
                ),
            );
        }
    }
    // `sending`: the receipt came back before our POST returned.
    if row.status != state::AWAITING_MDN && row.status != state::SENDING {
        tracing::info!(outbox = row.id, original_message_id = %original, status = %row.status, "MDN for a message not waiting for one; ignored");
        return Answer::Plain(
            StatusCode::OK,
            "mdn_ignored",
            format!(
                "message {original} is {} here; this receipt changes nothing",
                row.status
            ),
        );
    }
    let keystore = crate::keystore::Keystore::open(&state.config.data_dir);
    let profile = match crate::partners::load(&state.config.partners_dir, &row.partner, &keystore) {
        Ok(profile) => profile,
        Err(e) => {
            tracing::error!(outbox = row.id, error = %e, "the MDN's partner profile cannot be loaded; the partner is asked to resend it");
            return Answer::Retry(
                "internal_error",
                "300",
                format!("the receipt cannot be checked right now ({e})"),
            );
        }
    };
    let Some(mic) = row.mic.as_deref().and_then(Mic::parse) else {
        // Written before the POST; missing only for a message sent while
        // asking for no asynchronous receipt.
        return Answer::Plain(
            StatusCode::CONFLICT,
            "mdn_ignored",
            format!("message {original} did not ask for an asynchronous receipt"),
        );
    };
    let expectation = MdnExpectation {
        message_id: &row.message_id,
        mic: &mic,
        signed_requested: profile.mdn.signed.is_some(),
        message_signed: profile.sign.is_some(),
        partner_certs: &profile.mdn.partner_certificates,
    };
    let mut raw = render_headers(headers).into_bytes();
    raw.extend_from_slice(body);
    let mut filed: OutboxRow = row.clone();
    filed.mdn = Some(raw);
    filed.next_attempt_at = None;
    let verdict = verify_mdn(Some(content_type), body, &expectation);
    let result = match &verdict {
        Ok(receipt) => {
            filed.status = state::ACKNOWLEDGED.into();
            filed.last_error = None;
            filed.mdn_disposition = Some(receipt.disposition.render());
            for warning in &receipt.warnings {
                tracing::warn!(outbox = row.id, %warning, "asynchronous MDN");
            }
            state::ACKNOWLEDGED
        }
        Err(failure) => {
            filed.status = state::FAILED.into();
            filed.last_error = Some(format!("asynchronous MDN: {}", failure.reason));
            filed.mdn_disposition = failure.disposition.clone();
            state::FAILED
        }
    };
    // Conditional on the state read: the step may move the row from
    // `sending` to `awaiting_mdn` meanwhile (then file it again), and
    // nothing else may have filed a receipt.
    let mut seen = row.status.clone();
    for _ in 0..3 {
        let store_busy = |e: crate::store::StoreError| {
            Answer::Retry(
                "store_unavailable",
                e.kind.retry_after_seconds(),
                format!("the MDN cannot be filed now ({e}); retry later"),
            )
        };
        match state
            .store
            .outbox_update(&filed.update(), Some(&seen), None)
        {
            Ok(true) => {
                seen.clear();
                break;
            }
            Ok(false) => match state.store.outbox_row(row.id) {
                Ok(Some(now))
                    if now.status == state::SENDING || now.status == state::AWAITING_MDN =>
                {
                    seen = now.status;
                }
                Ok(_) => {
                    return Answer::Plain(
                        StatusCode::OK,
                        "mdn_ignored",
                        format!("message {original} got its receipt meanwhile"),
                    )
                }
                Err(e) => return store_busy(e),
            },
            Err(e) => return store_busy(e),
        }
    }
    if !seen.is_empty() {
        return Answer::Retry(
            "busy",
            "5",
            format!("message {original} is changing state; retry the receipt"),
        );
    }
    state
        .metrics
        .outbound
        .with_label_values(&[&row.partner, result])
        .inc();
    // The execution waiting for it need not wait for its next look.
    state.executor.wake(&row.execution_id);
    match verdict {
        Ok(_) => {
            tracing::info!(outbox = row.id, partner = %row.partner, original_message_id = %original, disposition = ?filed.mdn_disposition, "asynchronous MDN filed: acknowledged");
        }
        Err(failure) => {
            tracing::warn!(outbox = row.id, partner = %row.partner, original_message_id = %original, reason = %failure.reason, "asynchronous MDN filed: the document failed");
        }
    }
    Answer::Plain(StatusCode::OK, "mdn_filed", "MDN received".into())
}
