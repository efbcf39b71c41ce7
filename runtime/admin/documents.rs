//! Downloads for the admin API: one message of the log (`GET
//! /api/messages/{id}`), its parts (`/raw`: the request as received,
//! headers first; `/payload`: the unwrapped document; `/mdn`: the receipt
//! as sent, headers first) and the documents an execution kept
//! (`/api/executions/{id}/documents/{n}`, from 1). Served from wherever the
//! store keeps documents (files, SQLite, PostgreSQL), so that the CLI and
//! the console need no access to the data directory. Stored documents are
//! streamed: a download holds a few pieces of 256 KiB, not the document.

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::AdminState;
use crate::store::documents::Documents;
use crate::store::{MessageRow, Store};

/// What went wrong, as the HTTP answer it becomes.
enum Refusal {
    NotFound(String),
    Gone(String),
    Failed(String),
}

impl Refusal {
    fn answer(self) -> HttpResponse {
        match self {
            Refusal::NotFound(why) => HttpResponse::NotFound().body(why),
            Refusal::Gone(why) => HttpResponse::Gone().body(why),
            Refusal::Failed(why) => HttpResponse::InternalServerError().body(why),
        }
    }
}

fn find_message(store: &dyn Store, id: i64) -> Result<MessageRow, Refusal> {
    store
        .message(id)
        .map_err(|e| Refusal::Failed(e.to_string()))?
        .ok_or_else(|| Refusal::NotFound(format!("no message {id}")))
}

/// What a download serves: a stored document as a stream, or bytes the
/// row holds (the MDN).
enum Download {
    Stored(Box<dyn std::io::Read + Send>),
    Bytes(Vec<u8>),
}

/// Opens a stored document; 410 when retention (or an operator) removed it.
fn open(documents: &dyn Documents, what: &str, reference: &str) -> Result<Download, Refusal> {
    if !documents.exists(reference) {
        return Err(Refusal::Gone(format!(
            "the {what} is no longer stored ({reference}): purged by retention or removed"
        )));
    }
    documents
        .reader(reference)
        .map(Download::Stored)
        .map_err(|e| Refusal::Failed(format!("reading the {what}: {e}")))
}

/// One part of a message.
fn message_part(
    store: &dyn Store,
    documents: &dyn Documents,
    id: i64,
    part: &str,
) -> Result<Download, Refusal> {
    let message = find_message(store, id)?.record;
    let stored = |reference: Option<String>, what: &str| match reference {
        Some(reference) => open(documents, what, &reference),
        None => Err(Refusal::NotFound(format!(
            "message {id} has no {what} (refused requests keep only their raw request)"
        ))),
    };
    match part {
        "raw" => stored(message.raw_path, "raw request"),
        "payload" => stored(message.payload_path, "payload"),
        "mdn" if message.mdn_body.is_empty() => {
            Err(Refusal::NotFound(format!("message {id} asked for no MDN")))
        }
        "mdn" => {
            let mut bytes = Vec::with_capacity(message.mdn_body.len() + 256);
            for (name, value) in &message.mdn_headers {
                bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&message.mdn_body);
            Ok(Download::Bytes(bytes))
        }
        other => Err(Refusal::NotFound(format!(
            "unknown part {other:?}; use raw, payload or mdn"
        ))),
    }
}

/// The `n`th (from 1) document an execution kept.
fn execution_document(
    store: &dyn Store,
    documents: &dyn Documents,
    id: &str,
    n: usize,
) -> Result<Download, Refusal> {
    let execution = store
        .execution(id)
        .map_err(|e| Refusal::Failed(e.to_string()))?
        .ok_or_else(|| Refusal::NotFound(format!("no execution {id}")))?;
    let kept = n
        .checked_sub(1)
        .and_then(|i| execution.documents.get(i))
        .ok_or_else(|| {
            Refusal::NotFound(format!(
                "execution {id} kept {} document(s); ask for 1 to {0}",
                execution.documents.len()
            ))
        })?;
    open(documents, "document", &kept.path)
}

/// Bytes per piece of a streamed download, and pieces read ahead: what a
/// download holds in memory, whatever the document's size.
const PIECE: usize = 256 * 1024;
const PIECES_AHEAD: usize = 4;

fn answer(outcome: Result<Download, Refusal>) -> HttpResponse {
    let mut ok = HttpResponse::Ok();
    ok.content_type("application/octet-stream");
    match outcome {
        Ok(Download::Bytes(bytes)) => ok.body(bytes),
        Ok(Download::Stored(reader)) => ok.streaming(stream(reader)),
        Err(refusal) => refusal.answer(),
    }
}

/// Reads `reader` on a blocking thread, a piece at a time, at most
/// [`PIECES_AHEAD`] pieces ahead of the client.
fn stream(
    mut reader: Box<dyn std::io::Read + Send>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (pieces, received) = tokio::sync::mpsc::channel(PIECES_AHEAD);
    tokio::task::spawn_blocking(move || loop {
        let mut piece = vec![0u8; PIECE];
        let read = match reader.read(&mut piece) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "download cut short: reading the document failed");
                let _ = pieces.blocking_send(Err(e));
                return;
            }
        };
        piece.truncate(read);
        if pieces.blocking_send(Ok(bytes::Bytes::from(piece))).is_err() {
            return; // the client went away
        }
    });
    futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|piece| (piece, received))
    })
}

fn handles(state: &AdminState) -> (Arc<dyn Store>, Arc<dyn Documents>) {
    (state.store.clone(), state.documents.clone())
}

pub(super) async fn show_message(state: web::Data<AdminState>, id: web::Path<i64>) -> HttpResponse {
    let (store, _) = handles(&state);
    let id = id.into_inner();
    match web::block(move || find_message(store.as_ref(), id)).await {
        Ok(Ok(row)) => HttpResponse::Ok().json(row),
        Ok(Err(refusal)) => refusal.answer(),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

pub(super) async fn download_message_part(
    state: web::Data<AdminState>,
    path: web::Path<(i64, String)>,
) -> HttpResponse {
    let (id, part) = path.into_inner();
    message_part_response(&state, id, &part).await
}

/// A message part as a streamed answer (the admin API's and the console's).
pub(crate) async fn message_part_response(state: &AdminState, id: i64, part: &str) -> HttpResponse {
    let (store, documents) = handles(state);
    let part = part.to_string();
    match web::block(move || message_part(store.as_ref(), documents.as_ref(), id, &part)).await {
        Ok(outcome) => answer(outcome),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

pub(super) async fn download_execution_document(
    state: web::Data<AdminState>,
    path: web::Path<(String, usize)>,
) -> HttpResponse {
    let (id, n) = path.into_inner();
    execution_document_response(&state, id, n).await
}

/// An execution's kept document n (from 1) as a streamed answer.
pub(crate) async fn execution_document_response(
    state: &AdminState,
    id: String,
    n: usize,
) -> HttpResponse {
    let (store, documents) = handles(state);
    match web::block(move || execution_document(store.as_ref(), documents.as_ref(), &id, n)).await {
        Ok(outcome) => answer(outcome),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
