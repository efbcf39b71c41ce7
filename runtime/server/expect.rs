//! `Expect: 100-continue`: a sender that asks before sending its body hears
//! the final answer when the request would be refused without reading the
//! body (413 over the size limit, 503 draining or store unavailable), not an
//! invitation to upload what will be thrown away.

use actix_web::http::header::HeaderMap;
use actix_web::http::{ConnectionType, Method};
use actix_web::HttpResponse;
use atom_connectors::as2::headers::parse_as2_id;

use super::inbound::{declared_too_large, size_limit, unavailable};
use super::AppState;

/// The refusal to send instead of `100 Continue`, if any.
pub fn refusal(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    state: &AppState,
) -> Option<HttpResponse> {
    if method != Method::POST || !(path == "/as2" || path.starts_with("/as2/")) {
        return None;
    }
    let outcome = unavailable(state).or_else(|| {
        let limit = size_limit(listener_limit(headers, state), state);
        declared_too_large(headers, limit)
    })?;
    state.metrics.observe(outcome.label, 0.0);
    let mut response = outcome.response;
    // The body was never asked for; whatever follows on this connection
    // would be read as the next request.
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    Some(response)
}

/// The routed listener's own limit, when the AS2 headers name one.
fn listener_limit(headers: &HeaderMap, state: &AppState) -> Option<u64> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let to = parse_as2_id(header("AS2-To")?).ok()?;
    let from = parse_as2_id(header("AS2-From")?).ok()?;
    state.registry.route(&to, &from)?.spec.max_request_size
}
