//! The admin API, on a loopback address only, for the `atom` CLI:
//! listeners (list, pause, resume, restart), processes, executions (list,
//! show, rerun, kept documents), the message log and its documents, the nodes sharing the store, and Prometheus metrics. Every request needs `Authorization: Bearer <token>`,
//! the token the runtime writes to `<data_dir>/admin.token` (mode 0600).

pub(crate) mod documents;
pub mod metrics;
pub mod outbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::config::WorkerMode;
use crate::listeners::{ListenerState, Registry};
use crate::store::Store;
use crate::store::{DispositionFilter, MessageSearch};
use metrics::Metrics;

/// The token file inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// State of the admin server.
pub struct AdminState {
    pub token: String,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    /// Where the store keeps documents, for downloads.
    pub documents: Arc<dyn crate::store::documents::Documents>,
    pub metrics: Arc<Metrics>,
    /// `quotas.default_as2_workload`, for bundles without their own mode.
    pub default_mode: WorkerMode,
    /// Runs reruns of finished executions.
    pub executor: Arc<crate::process::workers::Executor>,
    /// `molecule.lease_seconds`: a node silent longer is shown lost.
    pub lease: std::time::Duration,
}

/// Reads the token, creating it (owner-only) when missing.
pub fn ensure_token(data_dir: &Path) -> std::io::Result<String> {
    let path = token_path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if existing.len() >= 32 {
            return Ok(existing);
        }
    }
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(std::io::Error::other)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AdminState>>()
        .map(|s| format!("Bearer {}", s.token));
    let given = req
        .headers()
        .get("authorization")
        .map(|v| v.as_bytes().to_vec());
    let ok = match (expected, given) {
        (Some(e), Some(g)) => e.len() == g.len() && openssl::memcmp::eq(e.as_bytes(), &g),
        _ => false,
    };
    if !ok {
        tracing::warn!(path = %req.path(), peer = ?req.peer_addr(), "admin request without a valid token refused");
        return Err(actix_web::error::ErrorUnauthorized(
            "admin token missing or wrong (see <data_dir>/admin.token)",
        ));
    }
    next.call(req).await
}

/// The admin routes, all behind the token.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("")
            .wrap(from_fn(require_token))
            .route("/api/listeners", web::get().to(list_listeners))
            .route("/api/listeners/{action}", web::post().to(listener_action))
            .route("/api/messages", web::get().to(list_messages))
            .route("/api/activity", web::get().to(activity))
            .route("/api/messages/{id}", web::get().to(documents::show_message))
            .route(
                "/api/messages/{id}/{part}",
                web::get().to(documents::download_message_part),
            )
            .route("/api/processes", web::get().to(list_processes))
            .route("/api/molecule", web::get().to(list_nodes))
            .route("/api/executions", web::get().to(list_executions))
            .route("/api/executions/{id}", web::get().to(show_execution))
            .route(
                "/api/executions/{id}/documents/{n}",
                web::get().to(documents::download_execution_document),
            )
            .route(
                "/api/executions/{id}/rerun",
                web::post().to(rerun_execution),
            )
            .route("/api/outbox", web::get().to(outbox::list))
            .route("/api/outbox/{id}", web::get().to(outbox::show))
            .route("/api/outbox/{id}/retry", web::post().to(outbox::retry))
            .route("/api/outbox/{id}/cancel", web::post().to(outbox::cancel))
            .route("/api/outbox/{id}/{part}", web::get().to(outbox::download))
            .route("/metrics", web::get().to(render_metrics)),
    );
}

async fn list_listeners(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.registry.list())
}

/// Body of a listener action.
#[derive(Debug, Deserialize)]
pub struct ActionRequest {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

async fn listener_action(
    state: web::Data<AdminState>,
    action: web::Path<String>,
    body: web::Json<ActionRequest>,
) -> HttpResponse {
    let ids = state.registry.resolve_ids(&body.ids, body.all);
    if ids.is_empty() {
        return HttpResponse::BadRequest().body("name one or more listeners, or use all");
    }
    let registry = state.registry.clone();
    let action = action.into_inner();
    let results = web::block(move || match action.as_str() {
        "pause" => Ok(registry.set_paused(&ids, true)),
        "resume" => Ok(registry.set_paused(&ids, false)),
        "restart" => Ok(registry.restart(&ids)),
        other => Err(format!(
            "unknown action {other:?}; use pause, resume or restart"
        )),
    })
    .await;
    match results {
        Ok(Ok(results)) => HttpResponse::Ok().json(results),
        Ok(Err(e)) => HttpResponse::BadRequest().body(e),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// The query of `GET /api/messages`: a [`MessageSearch`]. Every value is
/// read as text, so that a bad one is answered (400) with what is wrong.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    /// `processed` or `error`.
    pub disposition: Option<String>,
    pub received_from: Option<String>,
    pub received_to: Option<String>,
    pub before_id: Option<String>,
    /// Page size: 50 unless given, at most 1,000.
    pub limit: Option<String>,
}

impl MessagesQuery {
    /// The search it asks for, checked: an error says which value is bad
    /// and what it may be.
    pub fn search(self) -> Result<MessageSearch, String> {
        fn number<T: std::str::FromStr>(
            name: &str,
            value: Option<String>,
        ) -> Result<Option<T>, String> {
            match value.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name} {v:?} is not a whole number")),
            }
        }
        let disposition = match self.disposition.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) if v.eq_ignore_ascii_case("processed") => Some(DispositionFilter::Processed),
            Some(v) if v.eq_ignore_ascii_case("error") => Some(DispositionFilter::Error),
            Some(v) => return Err(format!("disposition {v:?}: use processed or error")),
        };
        let search = MessageSearch {
            as2_from: self.from,
            as2_to: self.to,
            message_id: self.message_id,
            subject: self.subject,
            file_name: self.file_name,
            mime_type: self.mime_type,
            disposition,
            received_from: self.received_from,
            received_to: self.received_to,
            before_id: number("before_id", self.before_id)?,
            limit: number("limit", self.limit)?.unwrap_or(crate::store::search::DEFAULT_LIMIT),
        };
        search.validate().map_err(|e| e.message)?;
        Ok(search)
    }
}

/// `GET /api/messages`: received messages, newest first, a page at a time
/// (`before_id` = the last id of the page before), filtered by the
/// [`MessagesQuery`] fields given.
async fn list_messages(
    state: web::Data<AdminState>,
    query: web::Query<MessagesQuery>,
) -> HttpResponse {
    let search = match query.into_inner().search() {
        Ok(search) => search,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let store = state.store.clone();
    match web::block(move || store.search_messages(&search)).await {
        Ok(Ok(rows)) => HttpResponse::Ok().json(rows),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// Hours `GET /api/activity` covers unless told, and at most.
const ACTIVITY_HOURS: (u32, u32) = (3, 48);

#[derive(Debug, Deserialize)]
struct ActivityQuery {
    hours: Option<String>,
}

/// `GET /api/activity?hours=N`: messages per minute over the last N hours
/// (3 unless given, at most 48), executions per status, pending
/// asynchronous MDNs, the outbox per state.
async fn activity(state: web::Data<AdminState>, query: web::Query<ActivityQuery>) -> HttpResponse {
    let (default, max) = ACTIVITY_HOURS;
    let hours = match query.hours.as_deref().map(str::trim) {
        None | Some("") => default,
        Some(v) => match v.parse::<u32>() {
            Ok(h) if (1..=max).contains(&h) => h,
            _ => {
                return HttpResponse::BadRequest()
                    .body(format!("hours {v:?}: use a whole number from 1 to {max}"))
            }
        },
    };
    let since = (time::OffsetDateTime::now_utc() - time::Duration::hours(i64::from(hours)))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let store = state.store.clone();
    match web::block(move || store.activity(&since)).await {
        Ok(Ok(activity)) => HttpResponse::Ok().json(activity),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// A deployed process with the mode it runs in.
#[derive(Debug, serde::Serialize)]
struct ProcessView {
    #[serde(flatten)]
    info: crate::listeners::registry::ProcessInfo,
    effective_mode: WorkerMode,
}

/// The nodes sharing this store, with their heartbeats.
async fn list_nodes(state: web::Data<AdminState>) -> HttpResponse {
    let (store, lease) = (state.store.clone(), state.lease);
    match web::block(move || crate::molecule::view(store.as_ref(), lease)).await {
        Ok(Ok(nodes)) => HttpResponse::Ok().json(nodes),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().body(e),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn list_processes(state: web::Data<AdminState>) -> HttpResponse {
    let views: Vec<ProcessView> = state
        .registry
        .processes()
        .into_iter()
        .map(|info| ProcessView {
            effective_mode: info.mode.unwrap_or(state.default_mode),
            info,
        })
        .collect();
    HttpResponse::Ok().json(views)
}

/// The search and `limit` (text: with `flatten`, serde_urlencoded hands
/// every value over as a string).
#[derive(Debug, Deserialize)]
struct ExecutionsQuery {
    #[serde(flatten)]
    search: crate::store::execution_query::ExecutionQuery,
    limit: Option<String>,
}

async fn list_executions(
    state: web::Data<AdminState>,
    query: web::Query<ExecutionsQuery>,
) -> HttpResponse {
    let query = query.into_inner();
    let limit = match query.limit.as_deref().map(str::parse::<u32>) {
        None => 50,
        Some(Ok(limit)) => limit.min(1_000_000),
        Some(Err(_)) => return HttpResponse::BadRequest().body("limit must be a number"),
    };
    let filter = match query.search.filter(limit) {
        Ok(filter) => filter,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let store = state.store.clone();
    match web::block(move || store.list_executions(&filter)).await {
        Ok(Ok(rows)) => HttpResponse::Ok().json(rows),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn show_execution(state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    let store = state.store.clone();
    let id = id.into_inner();
    let wanted = id.clone();
    match web::block(move || store.execution(&wanted)).await {
        Ok(Ok(Some(row))) => HttpResponse::Ok().json(row),
        Ok(Ok(None)) => HttpResponse::NotFound().body(format!("no execution {id}")),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// Reruns a finished execution: 202 with its STARTED record; 404 unknown,
/// 409 not finished or process not deployed, 410 document gone.
async fn rerun_execution(state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    let (executor, store, registry) = (
        state.executor.clone(),
        state.store.clone(),
        state.registry.clone(),
    );
    match web::block(move || executor.rerun(&id, store.as_ref(), &registry)).await {
        Ok(Ok(record)) => HttpResponse::Accepted().json(record),
        Ok(Err(refusal)) => {
            tracing::warn!(reason = %refusal, "rerun refused");
            let code = actix_web::http::StatusCode::from_u16(refusal.http_status())
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(code).body(refusal.to_string())
        }
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn render_metrics(state: web::Data<AdminState>) -> HttpResponse {
    state.metrics.listeners.reset();
    for listener in state.registry.list() {
        let label = match listener.state {
            ListenerState::Listening => "listening",
            ListenerState::Paused => "paused",
            ListenerState::Errored(_) => "errored",
        };
        state.metrics.listeners.with_label_values(&[label]).inc();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
