//! The `as2` step: sends each document it receives to a trading partner
//! through the durable outbox ([`crate::store::outbox`]).
//!
//! ```yaml
//! - as2:
//!     partner: acme                # partners/acme.yaml (see `partners.rs`)
//!     file_name: "{file_name}"     # optional; Content-Disposition file name
//!     subject: "Invoice {file_name}"   # optional; else the profile's subject
//! ```
//!
//! ```text
//! document ─▶ outbox row (durable, Message-ID fixed) ─▶ sending (attempt counted, durable)
//!          ─▶ build (compress, sign, encrypt) ─▶ POST ─▶ sync MDN verified
//!          ─▶ acknowledged | sent (no MDN asked) | retrying (transient) | failed (permanent)
//!             | awaiting_mdn (async: the receipt comes to `/as2/mdn`, the execution looks again)
//! ```
//!
//! A transient failure (no connection, timeout, HTTP 408, 429 or 5xx)
//! leaves the row `retrying` and the execution queued again after the
//! profile's back-off; the next attempt sends the same bytes with the same
//! Message-ID, so the partner's duplicate detection makes it once. A
//! crash after the POST leaves the row `sending`: the execution's recovery
//! sends it again, the same way. Permanent failures (a refused request, a
//! negative MDN, a MIC that does not match, an unusable receipt, retries
//! given up) end the row `failed` and the execution ERROR; the row keeps
//! its payload and its last error for `atom outbox retry`.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use atom_connectors::as2::build;
use atom_connectors::delivery::template::Template;
use serde::Deserialize;

use super::{Content, Document, LoadContext, ProcessStep, StepContext, StepFailure};
use crate::client::{describe_reqwest, verify_mdn, MdnExpectation};
use crate::partners::{MdnMode, PartnerProfile};
use crate::process::leases;
use crate::server::inbound::now_rfc3339;
use crate::store::documents::Documents;
use crate::store::outbox::{state, NewOutbound, OutboundBytes, OutboxRow, OutboxUpdate};
use crate::store::Store;

/// The largest document an `as2` step sends (it is built in memory).
pub const MAX_OUTBOUND_BYTES: u64 = 256 * 1024 * 1024;
/// The longest pause between two looks at a row awaiting its receipt.
const MAX_MDN_POLL: Duration = Duration::from_secs(300);
/// The largest response read (an MDN is a few KiB; error pages are cut).
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// A configured `as2` step.
pub struct As2Step {
    pub partner: PartnerProfile,
    file_name: Option<Template>,
    subject: Option<Template>,
    /// Built on first use, on a worker thread (the blocking client may not
    /// be created inside the async runtime).
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

/// What the step needs from the execution around it.
pub struct Sending<'a> {
    pub store: &'a dyn Store,
    pub documents: &'a dyn Documents,
    pub execution_id: &'a str,
    pub process: &'a str,
    pub step: u32,
    pub document: u32,
    pub bytes: OutboundBytes<'a>,
    pub size: u64,
    /// Subject and file name, from [`As2Step::headers`].
    pub headers: Headers,
    pub metrics: &'a crate::admin::metrics::Metrics,
}

/// The Subject and file name of one document.
pub struct Headers {
    pub subject: String,
    pub file_name: Option<String>,
}

/// A document the partner has.
#[derive(Debug)]
pub struct Sent {
    pub row: OutboxRow,
    /// Acknowledged before this attempt (a rerun or a retry of the
    /// execution): not sent again.
    pub earlier: bool,
    /// Lines for the execution's log: (level, text).
    pub notes: Vec<(&'static str, String)>,
    /// Needed more than one attempt, or the receipt carried a warning.
    pub warned: bool,
}

/// How one attempt failed.
enum Attempt {
    Transient(String),
    Permanent(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAs2 {
    partner: String,
    file_name: Option<String>,
    subject: Option<String>,
}

/// Loads the partner profile and parses the templates.
pub fn load(raw: RawAs2, cx: &LoadContext<'_>) -> Result<As2Step, (String, String)> {
    let partner = crate::partners::load(cx.partners.dir, &raw.partner, cx.partners.keystore)
        .map_err(|e| (cx.key("as2.partner"), e.to_string()))?;
    let template = |field: &str, value: Option<String>| {
        value
            .map(|v| Template::parse(&v).map_err(|e| (cx.key(field), e.to_string())))
            .transpose()
    };
    Ok(As2Step::new(
        partner,
        template("as2.file_name", raw.file_name)?,
        template("as2.subject", raw.subject)?,
    ))
}

impl ProcessStep for As2Step {
    fn describe(&self) -> String {
        format!("as2 {}", self.partner.name)
    }

    /// A changed partner profile is a new version of the bundle.
    fn version(&self) -> Option<&[u8]> {
        Some(self.partner.sha256.as_bytes())
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn run(
        &self,
        mut document: Document,
        cx: &mut StepContext<'_>,
    ) -> Result<Vec<Document>, StepFailure> {
        let where_ = cx.where_;
        let headers = self.headers(cx.lookup(&document.properties))?;
        let (bytes, size) = match &document.content {
            Content::Memory(bytes) => (OutboundBytes::Inline(bytes), bytes.len() as u64),
            Content::Stored { reference, size } => (OutboundBytes::Stored(reference), *size),
        };
        let sent = self
            .send(&Sending {
                store: cx.store,
                documents: cx.documents,
                execution_id: &cx.record.id,
                process: &cx.job.spec.id,
                step: cx.step as u32,
                document: cx.document as u32,
                bytes,
                size,
                headers,
                metrics: cx.metrics,
            })
            .map_err(|mut failure| {
                failure.reason = format!("{where_}: {}", failure.reason);
                failure
            })?;
        for (level, note) in &sent.notes {
            cx.log.line(level, format_args!("{where_}: {note}"));
        }
        *cx.warned |= sent.warned;
        document.delivered.push(format!(
            "as2 {} {} (outbox {})",
            self.partner.name, sent.row.message_id, sent.row.id
        ));
        Ok(vec![document])
    }
}

impl As2Step {
    pub fn new(
        partner: PartnerProfile,
        file_name: Option<Template>,
        subject: Option<Template>,
    ) -> As2Step {
        As2Step {
            partner,
            file_name,
            subject,
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| self.partner.http_client())
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The Subject (the step's template, else the profile's) and the file
    /// name (the step's template, else the received file name, if any).
    pub fn headers<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Headers, StepFailure> {
        let render = |template: &Option<Template>| {
            template
                .as_ref()
                .map(|t| t.render(lookup, str::to_string))
                .transpose()
                .map_err(|e| StepFailure::permanent(format!("as2 step: {e}")))
        };
        Ok(Headers {
            subject: render(&self.subject)?.unwrap_or_else(|| self.partner.subject.clone()),
            // A message without a file name tracks an empty one.
            file_name: render(&self.file_name)?
                .or_else(|| lookup("file_name").map(str::to_string))
                .filter(|name| !name.is_empty()),
        })
    }

    /// Sends one document (or finds it sent already).
    pub fn send(&self, cx: &Sending<'_>) -> Result<Sent, StepFailure> {
        let profile = &self.partner;
        let subject = &cx.headers.subject;
        let file_name = &cx.headers.file_name;
        if cx.size > MAX_OUTBOUND_BYTES {
            return Err(StepFailure::permanent(format!(
                "as2 step: the document has {} bytes; at most {MAX_OUTBOUND_BYTES} are sent",
                cx.size
            )));
        }
        let message_id = profile.new_message_id();
        let created_at = now_rfc3339();
        // A new row is written with its first attempt counted (one durable
        // write): after a crash, `attempts` says a partner may have it.
        let created_us = leases::now_us();
        let row = cx
            .store
            .outbox_enqueue(&NewOutbound {
                execution_id: cx.execution_id,
                step: cx.step,
                document: cx.document,
                process: cx.process,
                partner: &profile.name,
                as2_from: &profile.as2_from,
                as2_to: &profile.as2_to,
                message_id: &message_id,
                subject,
                file_name: file_name.as_deref(),
                bytes: cx.bytes,
                size: cx.size,
                created_at: &created_at,
                first_attempt: Some((&created_at, created_us)),
            })
            .map_err(|e| StepFailure {
                reason: format!("as2 step: the document could not be put in the outbox: {e}"),
                transient: true,
                retry_in: None,
                waiting: false,
            })?;
        let fresh = row.message_id == message_id;
        let mut notes = Vec::new();
        match row.status.as_str() {
            s if state::is_delivered(s) => {
                notes.push((
                    "INFO",
                    format!(
                        "outbox {}: {} to {} already ({}), not sent again",
                        row.id, row.message_id, profile.name, row.status
                    ),
                ));
                return Ok(Sent {
                    row,
                    earlier: true,
                    notes,
                    warned: false,
                });
            }
            state::FAILED => {
                return Err(StepFailure::permanent(format!(
                "outbox {}: {} to {} failed earlier: {} (`atom outbox retry {}` sends it again)",
                row.id,
                row.message_id,
                profile.name,
                row.last_error.as_deref().unwrap_or("no reason recorded"),
                row.id
            )))
            }
            state::CANCELLED => {
                return Err(StepFailure::permanent(format!(
                    "outbox {}: {} to {} was cancelled by an operator",
                    row.id, row.message_id, profile.name
                )))
            }
            _ => {}
        }
        if row.status == state::AWAITING_MDN {
            return Err(self.await_mdn(cx, &row));
        }
        // Respect the back-off even when the execution runs early (a
        // restart recovers it at once).
        if row.status == state::RETRYING {
            if let Some(wait) = row.next_attempt_at.as_deref().and_then(until) {
                return Err(StepFailure {
                    reason: format!(
                        "outbox {}: next attempt of {} at {}",
                        row.id,
                        row.message_id,
                        row.next_attempt_at.as_deref().unwrap_or("")
                    ),
                    transient: true,
                    retry_in: Some(wait),
                    waiting: false,
                });
            }
        }
        let now_us = leases::now_us();
        if let Some(first) = row.first_attempt_at_us {
            let elapsed = Duration::from_micros(now_us.saturating_sub(first).max(0) as u64);
            if elapsed >= profile.retry.give_up_after {
                let reason = format!(
                    "gave up after {} attempts over {} s: {}",
                    row.attempts,
                    elapsed.as_secs(),
                    row.last_error.as_deref().unwrap_or("no reason recorded")
                );
                return Err(self.fail(cx, &row, &reason));
            }
        }
        let payload = if fresh {
            match cx.bytes {
                OutboundBytes::Inline(bytes) => std::borrow::Cow::Borrowed(bytes),
                OutboundBytes::Stored(reference) => std::borrow::Cow::Owned(
                    cx.documents
                        .read(reference)
                        .map_err(|e| StepFailure::payload(&e))?,
                ),
            }
        } else {
            std::borrow::Cow::Owned(self.stored_payload(cx, &row)?)
        };

        // Counted before anything leaves: after a crash, `attempts` says a
        // partner may have it (a new row was written so).
        let mut sending = row.clone();
        if !fresh {
            sending.status = state::SENDING.into();
            sending.attempts += 1;
            sending.first_attempt_at_us = Some(row.first_attempt_at_us.unwrap_or(now_us));
            sending.last_attempt_at = Some(now_rfc3339());
            sending.next_attempt_at = None;
            self.record(cx, &sending.update())?;
        }

        // An asynchronous receipt may come back before the POST returns:
        // the MIC it is checked against is on the row before the POST.
        let with_mic = |mic: &str| {
            if profile.mdn.mode != MdnMode::Async {
                return Ok(());
            }
            let mut row = sending.clone();
            row.mic = Some(mic.to_string());
            self.record_outcome(cx, &row)
                .map_err(|e| Attempt::Transient(e.reason))
        };
        match self.attempt(&sending, &payload, &with_mic) {
            Ok((status, mic, disposition, mdn, warnings)) => {
                let mut done = sending.clone();
                done.status = status.into();
                done.last_error = None;
                done.mic = Some(mic);
                done.mdn_disposition = disposition;
                done.mdn = mdn;
                if status == state::AWAITING_MDN {
                    done.next_attempt_at = Some(rfc3339_in(profile.mdn.async_wait));
                    let update = OutboxUpdate {
                        lazy: true,
                        ..done.update()
                    };
                    let waiting = cx
                        .store
                        .outbox_update(&update, Some(state::SENDING), None)
                        .map_err(|e| StepFailure {
                            reason: format!("as2 step: recording the outbox state failed: {e}"),
                            transient: true,
                            retry_in: None,
                            waiting: false,
                        })?;
                    if !waiting {
                        // The receipt was filed first: look at the row again now.
                        return Err(StepFailure {
                            reason: format!(
                                "outbox {}: {}: the asynchronous MDN came before the POST returned",
                                done.id, done.message_id
                            ),
                            transient: true,
                            retry_in: Some(Duration::ZERO),
                            waiting: true,
                        });
                    }
                    return Err(self.await_mdn(cx, &done));
                }
                self.record_outcome(cx, &done)?;
                self.count(cx, &done.status);
                let warned = done.attempts > 1 || !warnings.is_empty();
                for warning in warnings {
                    notes.push(("WARN", format!("outbox {}: {warning}", done.id)));
                }
                notes.push((
                    "INFO",
                    format!(
                        "outbox {}: {} to {} at {}: {}{} (attempt {})",
                        done.id,
                        done.message_id,
                        profile.name,
                        profile.url,
                        done.status,
                        done.mdn_disposition
                            .as_deref()
                            .map(|d| format!(", {d}"))
                            .unwrap_or_default(),
                        done.attempts
                    ),
                ));
                Ok(Sent {
                    row: done,
                    earlier: false,
                    notes,
                    warned,
                })
            }
            Err(Attempt::Permanent(reason)) => Err(self.fail(cx, &sending, &reason)),
            Err(Attempt::Transient(reason)) => {
                let delay = profile.retry.delay_after(sending.attempts);
                let first = sending.first_attempt_at_us.unwrap_or(now_us);
                let deadline = Duration::from_micros(
                    (leases::now_us() - first).max(0) as u64 + delay.as_micros() as u64,
                );
                if deadline > profile.retry.give_up_after {
                    let reason = format!(
                        "gave up after {} attempts (retry.give_up_after_hours of partner {}): {reason}",
                        sending.attempts, profile.name
                    );
                    return Err(self.fail(cx, &sending, &reason));
                }
                let next = rfc3339_in(delay);
                let mut retrying = sending.clone();
                retrying.status = state::RETRYING.into();
                retrying.last_error = Some(reason.clone());
                retrying.next_attempt_at = Some(next.clone());
                self.record_outcome(cx, &retrying)?;
                self.count(cx, "retried");
                Err(StepFailure {
                    reason: format!(
                        "outbox {}: {} to {}: attempt {} failed: {reason}; next attempt at {next}",
                        retrying.id, retrying.message_id, profile.name, retrying.attempts
                    ),
                    transient: true,
                    retry_in: Some(delay),
                    waiting: false,
                })
            }
        }
    }

    /// The bytes of a row written by an earlier attempt.
    fn stored_payload(&self, cx: &Sending<'_>, row: &OutboxRow) -> Result<Vec<u8>, StepFailure> {
        let bytes = match &row.payload_ref {
            Some(reference) => cx
                .documents
                .read(reference)
                .map_err(|e| StepFailure::payload(&e))?,
            None => cx
                .store
                .outbox_payload(row.id)
                .map_err(|e| StepFailure::payload(&e))?
                .unwrap_or_default(),
        };
        if bytes.len() as u64 != row.size {
            return Err(StepFailure::permanent(format!(
                "outbox {}: the stored document has {} bytes, {} were queued",
                row.id,
                bytes.len(),
                row.size
            )));
        }
        Ok(bytes)
    }

    fn record(&self, cx: &Sending<'_>, update: &OutboxUpdate<'_>) -> Result<(), StepFailure> {
        cx.store
            .outbox_update(update, None, None)
            .map(|_| ())
            .map_err(|e| StepFailure {
                reason: format!("as2 step: recording the outbox state failed: {e}"),
                transient: true,
                retry_in: None,
                waiting: false,
            })
    }

    /// A delivered document whose asynchronous receipt has not come: the
    /// execution looks again later (sooner at first), until the wait ends.
    fn await_mdn(&self, cx: &Sending<'_>, row: &OutboxRow) -> StepFailure {
        let deadline = row.next_attempt_at.as_deref().unwrap_or("");
        let Some(left) = until(deadline) else {
            return self.fail(
                cx,
                row,
                &format!(
                    "no asynchronous MDN came within {} h (mdn.wait_hours of partner {})",
                    self.partner.mdn.async_wait.as_secs() / 3600,
                    self.partner.name
                ),
            );
        };
        let since_sent = row
            .last_attempt_at
            .as_deref()
            .and_then(since)
            .unwrap_or_default();
        let poll = since_sent
            .clamp(Duration::from_secs(1), MAX_MDN_POLL)
            .min(left);
        StepFailure {
            reason: format!(
                "outbox {}: {} delivered to {}; waiting for its asynchronous MDN until {deadline}",
                row.id, row.message_id, self.partner.name
            ),
            transient: true,
            retry_in: Some(poll),
            waiting: true,
        }
    }

    fn count(&self, cx: &Sending<'_>, result: &str) {
        cx.metrics
            .outbound
            .with_label_values(&[&self.partner.name, result])
            .inc();
    }

    /// Records what an attempt ended in, durable with the execution's
    /// next state (a crash before that leaves the row `sending`: sent
    /// again, and the partner's duplicate check absorbs it).
    fn record_outcome(&self, cx: &Sending<'_>, row: &OutboxRow) -> Result<(), StepFailure> {
        self.record(
            cx,
            &OutboxUpdate {
                lazy: true,
                ..row.update()
            },
        )
    }

    /// Ends a row `failed` with `reason`; the execution's failure.
    fn fail(&self, cx: &Sending<'_>, row: &OutboxRow, reason: &str) -> StepFailure {
        let mut failed = row.clone();
        failed.status = state::FAILED.into();
        failed.last_error = Some(reason.to_string());
        failed.next_attempt_at = None;
        if let Err(e) = self.record_outcome(cx, &failed) {
            return e;
        }
        self.count(cx, state::FAILED);
        StepFailure::permanent(format!(
            "outbox {}: {} to {}: {reason}",
            row.id, row.message_id, self.partner.name
        ))
    }

    /// One POST and its receipt: (status, our MIC, disposition, the
    /// receipt as received, warnings).
    #[allow(clippy::type_complexity)]
    fn attempt(
        &self,
        row: &OutboxRow,
        payload: &[u8],
        before_post: &dyn Fn(&str) -> Result<(), Attempt>,
    ) -> Result<
        (
            &'static str,
            String,
            Option<String>,
            Option<Vec<u8>>,
            Vec<String>,
        ),
        Attempt,
    > {
        let profile = &self.partner;
        let built = build::build(&profile.outbound(
            payload,
            row.file_name.as_deref(),
            &row.subject,
            &row.message_id,
        ))
        .map_err(|e| Attempt::Permanent(format!("building the message failed: {e}")))?;
        before_post(&built.expected_mic.render())?;
        let client = self.client().map_err(Attempt::Permanent)?;
        let mut request = client.post(&profile.url);
        for (name, value) in built.headers.iter() {
            request = request.header(name, value);
        }
        for (name, value) in &profile.http.headers {
            request = request.header(name, value);
        }
        if let Some((user, password)) = &profile.http.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .body(built.body)
            .send()
            .map_err(|e| Attempt::Transient(describe_reqwest(&e)))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut received_headers = String::new();
        for (name, value) in response.headers() {
            received_headers.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let mut body = Vec::new();
        response
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut body)
            .map_err(|e| {
                Attempt::Transient(format!("HTTP {status}, then reading the response: {e}"))
            })?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(300)
                .collect();
            let reason = format!("{} answered HTTP {status}: {text}", profile.url);
            let code = status.as_u16();
            return Err(if code == 408 || code == 429 || status.is_server_error() {
                Attempt::Transient(reason)
            } else {
                Attempt::Permanent(reason)
            });
        }
        let mic = built.expected_mic.render();
        match profile.mdn.mode {
            MdnMode::None => return Ok((state::SENT, mic, None, None, Vec::new())),
            // The receipt comes to the shared web server (`outbound_mdn.rs`).
            MdnMode::Async => return Ok((state::AWAITING_MDN, mic, None, None, Vec::new())),
            MdnMode::Sync => {}
        }
        if body.is_empty() {
            return Err(Attempt::Permanent(format!(
                "{} answered HTTP {status} without the synchronous MDN asked for",
                profile.url
            )));
        }
        let expectation = MdnExpectation {
            message_id: &row.message_id,
            mic: &built.expected_mic,
            signed_requested: profile.mdn.signed.is_some(),
            message_signed: profile.sign.is_some(),
            partner_certs: &profile.mdn.partner_certificates,
        };
        let mut raw = received_headers.into_bytes();
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        match verify_mdn(content_type.as_deref(), &body, &expectation) {
            Ok(receipt) => Ok((
                state::ACKNOWLEDGED,
                mic,
                Some(receipt.disposition.render()),
                Some(raw),
                receipt.warnings,
            )),
            Err(failure) => Err(Attempt::Permanent(failure.reason)),
        }
    }
}

/// RFC 3339 time `delay` from now.
fn rfc3339_in(delay: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + delay;
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How long since an RFC 3339 time; `None` when it is to come (or unreadable).
fn since(at: &str) -> Option<Duration> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    let gone = time::OffsetDateTime::now_utc() - at;
    (!gone.is_negative()).then(|| gone.unsigned_abs())
}

/// How long until an RFC 3339 time; `None` when it has passed (or is unreadable).
fn until(at: &str) -> Option<Duration> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    (left.is_positive()).then(|| left.unsigned_abs())
}
