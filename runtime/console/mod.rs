//! The operator console: server-rendered pages on `console.address`, for
//! the people who run Atom day to day. It reads the same model as the
//! admin API (the registry, the store, the keystore) and changes state
//! through the same calls, so that the CLI and the console never disagree.
//!
//! Every page needs a session ([`sessions`]) opened by a log-in against
//! `atom users` ([`users`]), throttled against guessing ([`throttle`]).
//! Every form that changes state carries the session's CSRF token and must
//! come from the console's own origin; viewers read, operators act; each
//! action is written to the audit log ([`audit`]). Pages have no script:
//! they work with the keyboard and without JavaScript.

pub mod audit;
mod auth;
mod files;
mod html;
mod pages;
pub mod sessions;
mod throttle;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::admin::AdminState;
use crate::config::ConsoleConfig;
use crate::keystore::Keystore;

/// What every console handler reads.
pub struct ConsoleState {
    /// The admin API's state: the one model both serve.
    pub admin: web::Data<AdminState>,
    pub users: users::Users,
    pub sessions: sessions::Sessions,
    pub throttle: throttle::Throttle,
    pub audit: audit::AuditLog,
    pub keystore: Keystore,
    /// Cookies are marked Secure when served over HTTPS.
    pub https: bool,
}

/// The console server, bound and ready to run.
pub struct Console {
    pub server: actix_web::dev::Server,
    pub address: SocketAddr,
}

/// Binds the console (HTTPS when a key pair is configured).
pub fn bind(
    config: &ConsoleConfig,
    data_dir: &std::path::Path,
    admin: web::Data<AdminState>,
) -> Result<Console, String> {
    let keystore = Keystore::open(data_dir);
    let tls = match &config.https_keystore_name {
        Some(name) => Some(tls_acceptor(&keystore, name)?),
        None => None,
    };
    let state = web::Data::new(ConsoleState {
        admin,
        users: users::Users::open(data_dir),
        sessions: sessions::Sessions::new(config.session_idle),
        throttle: throttle::Throttle::default(),
        audit: audit::AuditLog::open(data_dir),
        keystore,
        https: tls.is_some(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(64 * 1024))
            .wrap(from_fn(security_headers))
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    // A stranger's idle connections are not held for long.
    .client_request_timeout(std::time::Duration::from_secs(10))
    .max_connections(256);
    let server = match tls {
        Some(acceptor) => server.bind_openssl(config.address, acceptor),
        None => server.bind(config.address),
    }
    .map_err(|e| format!("binding the console on {}: {e}", config.address))?;
    let address = server.addrs().first().copied().unwrap_or(config.address);
    Ok(Console {
        server: server.run(),
        address,
    })
}

fn tls_acceptor(
    keystore: &Keystore,
    name: &str,
) -> Result<openssl::ssl::SslAcceptorBuilder, String> {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let pair = keystore.key_pair(name).map_err(|e| {
        format!("console.https_keystore_name {name:?}: {e} (import one with `atom certs import {name} FILE`)")
    })?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| format!("console TLS: {e}"))?;
    builder
        .set_private_key(&pair.key)
        .and_then(|_| builder.set_certificate(&pair.cert))
        .and_then(|_| builder.check_private_key())
        .map_err(|e| format!("console TLS key pair {name:?}: {e}"))?;
    Ok(builder)
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/console.css", web::get().to(stylesheet))
        .route("/login", web::get().to(auth::login_page))
        .route("/login", web::post().to(auth::login))
        .route("/logout", web::post().to(auth::logout))
        .route("/", web::get().to(pages::overview::show))
        .route("/listeners", web::get().to(pages::listeners::show))
        .route("/listeners/{action}", web::post().to(pages::listeners::act))
        .route("/messages", web::get().to(pages::messages::search))
        .route("/messages/{id}", web::get().to(pages::messages::show))
        .route(
            "/messages/{id}/download/{part}",
            web::get().to(pages::messages::download),
        )
        .route("/executions", web::get().to(pages::executions::list))
        .route("/executions/{id}", web::get().to(pages::executions::show))
        .route(
            "/executions/{id}/documents/{n}",
            web::get().to(pages::executions::download),
        )
        .route(
            "/executions/{id}/rerun",
            web::post().to(pages::executions::rerun),
        )
        .route("/outbox", web::get().to(pages::outbox::list))
        .route("/outbox/{id}/{action}", web::post().to(pages::outbox::act))
        .route("/processes", web::get().to(pages::processes::show))
        .route("/certificates", web::get().to(pages::certificates::show))
        .route("/audit", web::get().to(pages::audit::show))
        .default_service(web::to(not_found));
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(include_str!("console.css"))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/html; charset=utf-8")
        .body(html::bare_page(
            "Not found",
            r#"<p>No such page. <a href="/">Back to the overview</a>.</p>"#,
        ))
}

/// No script, no inline style, no framing, nothing from elsewhere; pages
/// are not cached (they show live state and are behind a log-in).
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// An HTML answer.
fn html_response(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// A 303 to `to` (after a form, so that reloading does not repeat it).
fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

/// Runs blocking model work (the store, the registry) off the server thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match web::block(work).await {
        Ok(result) => result,
        Err(e) => Err(format!("the console's worker failed: {e}")),
    }
}

/// The shared state as an `Arc`, for moving into blocking work.
fn shared(state: &web::Data<ConsoleState>) -> Arc<ConsoleState> {
    state.clone().into_inner()
}
