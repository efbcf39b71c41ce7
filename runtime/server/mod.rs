//! The shared web server: `POST /as2`, `/as2/<AccountID>` and
//! `/as2/<AccountID>.<suffix>` on HTTP and HTTPS, and `GET /health`.
//!
//! - [`inbound`]: the AS2 receive path (the only module knowing HTTP and AS2).
//! - [`body`]: request bodies under a limit, spooled to disk when large.
//! - [`tls`]: HTTPS set-up and client certificates.
//! - [`mdn_delivery`]: asynchronous MDNs with retries.

pub mod body;
pub mod inbound;
pub mod mdn_delivery;
pub mod tls;

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::listeners::Registry;
use crate::store::group_commit::GroupCommitter;
use crate::store::Store;
use mdn_delivery::MdnSender;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    /// Makes receipts durable in groups (files + rows) before MDNs leave.
    pub committer: GroupCommitter,
    pub metrics: Arc<Metrics>,
    pub mdn_sender: MdnSender,
    /// Reporting-UA of our MDNs.
    pub reporting_ua: String,
    /// Runs the processes of received documents.
    pub executor: Arc<crate::process::workers::Executor>,
    /// (AS2-From, Message-ID) pairs being received right now, so that two
    /// concurrent copies of one message are never both stored.
    pub in_flight: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// Holds a message's place in [`AppState::in_flight`] until dropped.
pub struct InFlight<'a> {
    state: &'a AppState,
    key: (String, String),
}

impl AppState {
    /// Claims (from, message id); `None` if another request holds it.
    pub fn claim(&self, from: &str, message_id: &str) -> Option<InFlight<'_>> {
        let key = (from.to_string(), message_id.to_string());
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone())
            .then_some(InFlight { state: self, key })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self
            .state
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
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
        .route("/as2/{target}", web::post().to(inbound::receive))
        .route("/health", web::get().to(health));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}
