//! The outbox over the admin API: list, show, download the document and
//! the receipt, retry (send again), cancel.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::AdminState;
use crate::store::outbox::{state, OutboxFilter, OutboxRow};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    partner: Option<String>,
    status: Option<String>,
    execution: Option<String>,
    limit: Option<u32>,
}

pub async fn list(state: web::Data<AdminState>, query: web::Query<ListQuery>) -> HttpResponse {
    let query = query.into_inner();
    if let Some(status) = &query.status {
        if !state::ALL.contains(&status.as_str()) {
            return HttpResponse::BadRequest().body(format!(
                "unknown outbox status {status:?}; one of {}",
                state::ALL.join(", ")
            ));
        }
    }
    let filter = OutboxFilter {
        partner: query.partner,
        status: query.status,
        execution_id: query.execution,
        limit: query.limit.unwrap_or(50).clamp(1, 10_000),
    };
    let store = state.store.clone();
    match web::block(move || store.outbox_list(&filter)).await {
        Ok(Ok(rows)) => HttpResponse::Ok().json(rows),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn row(state: &AdminState, id: i64) -> Result<OutboxRow, HttpResponse> {
    find(state, id).await.map_err(Refusal::answer)
}

pub async fn show(state: web::Data<AdminState>, id: web::Path<i64>) -> HttpResponse {
    match row(&state, id.into_inner()).await {
        Ok(row) => HttpResponse::Ok().json(row),
        Err(response) => response,
    }
}

/// `payload`: the document as queued; `mdn`: the receipt as received.
pub async fn download(
    state: web::Data<AdminState>,
    path: web::Path<(i64, String)>,
) -> HttpResponse {
    let (id, part) = path.into_inner();
    let row = match row(&state, id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let bytes = match part.as_str() {
        "mdn" => match row.mdn {
            Some(mdn) => Ok(mdn),
            None => {
                return HttpResponse::NotFound()
                    .body(format!("outbox row {id} has no receipt ({})", row.status))
            }
        },
        "payload" => {
            let (store, documents) = (state.store.clone(), state.documents.clone());
            web::block(move || match &row.payload_ref {
                Some(reference) => documents.read(reference).map(Some),
                None => store.outbox_payload(id),
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(Option::unwrap_or_default)
        }
        other => {
            return HttpResponse::NotFound().body(format!("no part {other:?}; use payload or mdn"))
        }
    };
    match bytes {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes),
        Err(e) => HttpResponse::InternalServerError().body(e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RetryRequest {
    /// Send as a new message (a new Message-ID): needed for a document the
    /// partner acknowledged already.
    #[serde(default)]
    pub new_id: bool,
}

/// Sends a failed or cancelled document again, through its execution's
/// rerun (other documents the partner has are not sent again). 202 with
/// the row; 409 when it is under way or delivered (without `new_id`).
pub async fn retry(
    state: web::Data<AdminState>,
    id: web::Path<i64>,
    request: web::Json<RetryRequest>,
) -> HttpResponse {
    match retry_row(&state, id.into_inner(), request.new_id).await {
        Ok(row) => HttpResponse::Accepted().json(row),
        Err(refusal) => refusal.answer(),
    }
}

/// Why an operator's action on an outbox row did not happen, with the
/// HTTP status the admin API answers.
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    fn answer(self) -> HttpResponse {
        HttpResponse::build(
            actix_web::http::StatusCode::from_u16(self.status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
        )
        .body(self.reason)
    }
}

async fn find(state: &AdminState, id: i64) -> Result<OutboxRow, Refusal> {
    let store = state.store.clone();
    match web::block(move || store.outbox_row(id)).await {
        Ok(Ok(Some(row))) => Ok(row),
        Ok(Ok(None)) => Err(Refusal::new(
            404,
            format!("no outbox row {id}; `atom outbox` lists them"),
        )),
        Ok(Err(e)) => Err(Refusal::new(500, e.to_string())),
        Err(e) => Err(Refusal::new(500, e.to_string())),
    }
}

/// The retry itself, for the admin API and the console.
pub async fn retry_row(state: &AdminState, id: i64, new_id: bool) -> Result<OutboxRow, Refusal> {
    let row = find(state, id).await?;
    let allowed = match row.status.as_str() {
        state::FAILED | state::CANCELLED => true,
        s if state::is_delivered(s) => new_id,
        _ => false,
    };
    if !allowed {
        let hint = if state::is_delivered(&row.status) {
            "the partner has it; add --new-id to send it again as a new message"
        } else {
            "it is still being sent; cancel it first, or wait"
        };
        return Err(Refusal::new(
            409,
            format!("outbox row {id} is {}: {hint}", row.status),
        ));
    }
    let new_message_id = new_id.then(|| {
        let domain = row
            .message_id
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('>').to_string())
            .unwrap_or_else(|| atom_connectors::as2::mdn::id_domain(&row.as2_from));
        format!("<{}@{domain}>", uuid::Uuid::new_v4())
    });
    let (store, executor, registry) = (
        state.store.clone(),
        state.executor.clone(),
        state.registry.clone(),
    );
    let outcome = web::block(move || {
        let mut queued = row.clone();
        queued.status = state::QUEUED.into();
        queued.first_attempt_at_us = None;
        queued.next_attempt_at = None;
        let changed = store
            .outbox_update(
                &queued.update(),
                Some(&row.status),
                new_message_id.as_deref(),
            )
            .map_err(|e| Refusal::new(500, e.to_string()))?;
        if !changed {
            return Err(Refusal::new(
                409,
                format!("outbox row {id} changed meanwhile; look again"),
            ));
        }
        match executor.rerun(&row.execution_id, store.as_ref(), &registry) {
            Ok(_) => store
                .outbox_row(id)
                .map_err(|e| Refusal::new(500, e.to_string()))?
                .ok_or_else(|| Refusal::new(404, format!("outbox row {id} is gone"))),
            Err(refusal) => {
                // Put it back as it was: nothing will send it.
                let _ = store.outbox_update(&row.update(), Some(state::QUEUED), None);
                Err(Refusal::new(refusal.http_status(), refusal.to_string()))
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(row)) => Ok(row),
        Ok(Err(refusal)) => {
            tracing::warn!(outbox = id, reason = %refusal.reason, "outbox retry refused");
            Err(refusal)
        }
        Err(e) => Err(Refusal::new(500, e.to_string())),
    }
}

/// Stops sending a document that is queued, retrying or failed: 200 with
/// the row; 409 when the partner has it or it is cancelled already.
pub async fn cancel(state: web::Data<AdminState>, id: web::Path<i64>) -> HttpResponse {
    match cancel_row(&state, id.into_inner()).await {
        Ok(row) => HttpResponse::Ok().json(row),
        Err(refusal) => refusal.answer(),
    }
}

/// The cancel itself, for the admin API and the console.
pub async fn cancel_row(state: &AdminState, id: i64) -> Result<OutboxRow, Refusal> {
    let row = find(state, id).await?;
    if state::is_delivered(&row.status) || row.status == state::CANCELLED {
        return Err(Refusal::new(
            409,
            format!("outbox row {id} is {}; nothing to cancel", row.status),
        ));
    }
    let store = state.store.clone();
    let outcome = web::block(move || {
        let mut cancelled = row.clone();
        cancelled.status = state::CANCELLED.into();
        cancelled.next_attempt_at = None;
        let changed = store.outbox_update(&cancelled.update(), Some(&row.status), None)?;
        Ok::<_, crate::store::StoreError>(changed.then_some(cancelled))
    })
    .await;
    match outcome {
        Ok(Ok(Some(row))) => {
            tracing::info!(outbox = id, message_id = %row.message_id, partner = %row.partner, "outbound document cancelled by an operator");
            Ok(row)
        }
        Ok(Ok(None)) => Err(Refusal::new(
            409,
            format!("outbox row {id} changed meanwhile; look again"),
        )),
        Ok(Err(e)) => Err(Refusal::new(500, e.to_string())),
        Err(e) => Err(Refusal::new(500, e.to_string())),
    }
}
