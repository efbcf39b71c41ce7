//! The shared web server: `POST /as2`, `/as2/<AccountID>`, `/as2/mdn` (receipts for what we sent) and
//! `/as2/<AccountID>.<suffix>` on HTTP and HTTPS, and `GET /health`.
//!
//! - [`inbound`]: the AS2 receive path (the only module knowing HTTP and AS2).
//! - [`body`]: request bodies under a limit, spooled to disk when large.
//! - [`client_address`]: the client behind a trusted load balancer.
//! - [`listen`]: the HTTP and HTTPS sockets and their connection limits.
//! - [`expect`]: the answer to `Expect: 100-continue` (a refusal, not 100).
//! - [`tls`]: HTTPS set-up and client certificates.
//! - [`in_flight`]: copies of one message arriving together wait for the first.
//! - [`mdn_delivery`]: asynchronous MDNs with retries.
//! - [`mdn_target`]: where an asynchronous MDN may go (no internal addresses).
//! - [`per_address`]: AS2 requests under way per client address, bounded.

pub mod body;
pub mod client_address;
pub mod expect;
pub mod in_flight;
pub mod inbound;
pub mod listen;
pub mod mdn_delivery;
pub mod mdn_target;
pub mod outbound_mdn;
pub mod per_address;
pub mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::listeners::Registry;
use crate::shutdown::Shutdown;
use crate::store::documents::Documents;
use crate::store::group_commit::GroupCommitter;
use crate::store::health::StoreHealth;
use crate::store::Store;
use in_flight::InFlight;
use mdn_delivery::MdnSender;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    /// Where received documents are staged and kept.
    pub documents: Arc<dyn Documents>,
    /// Makes receipts durable in groups (files + rows) before MDNs leave.
    pub committer: GroupCommitter,
    pub metrics: Arc<Metrics>,
    pub mdn_sender: MdnSender,
    /// Reporting-UA of our MDNs.
    pub reporting_ua: String,
    /// Runs the processes of received documents.
    pub executor: Arc<crate::process::workers::Executor>,
    /// (AS2-From, Message-ID) pairs being received right now.
    pub in_flight: Arc<InFlight>,
    /// Whether the store can commit: no positive MDN while it cannot.
    pub health: Arc<StoreHealth>,
    /// Set on SIGTERM: new AS2 requests get 503, `/health` says draining.
    pub shutdown: Shutdown,
    /// AS2 requests being handled, for the drain to wait on.
    pub receiving: AtomicUsize,
    /// AS2 requests under way per client address.
    pub per_address: Arc<per_address::PerAddress>,
}

/// Counts one AS2 request in [`AppState::receiving`] until dropped.
pub struct Receiving<'a>(&'a AtomicUsize);

impl<'a> Receiving<'a> {
    pub fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Receiving(counter)
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AppState {
    /// True for `<account_id>` and `<account_id>.<instance_suffix>`.
    pub fn accepts_target(&self, target: &str) -> bool {
        if target == self.config.account_id {
            return true;
        }
        match (&self.config.instance_suffix, target.split_once('.')) {
            (Some(suffix), Some((account, given))) => {
                account == self.config.account_id && given == suffix
            }
            _ => false,
        }
    }
}

/// The routes of the shared web server.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/as2", web::post().to(inbound::receive))
        // Before `/as2/{target}`: receipts for what we sent.
        .route("/as2/mdn", web::post().to(outbound_mdn::receive))
        .route("/as2/{target}", web::post().to(inbound::receive))
        .route("/health", web::get().to(health));
}

/// For load balancers and probes: 200 when this node takes messages; 503
/// while it drains or cannot commit to its store, with the reason.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let (status, body) = if state.shutdown.is_triggered() {
        (
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        )
    } else if let Some(fault) = state.health.fault() {
        (
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "store_unavailable", "kind": fault.kind, "reason": fault.reason}),
        )
    } else {
        (
            actix_web::http::StatusCode::OK,
            serde_json::json!({"status": "ok"}),
        )
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}
