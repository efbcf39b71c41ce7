//! The shared web server's sockets (HTTP and HTTPS), built on actix-http's
//! `HttpService` rather than actix-web's `HttpServer` for one reason: only
//! there can we answer `Expect: 100-continue` ourselves ([`super::expect`]).
//! Timeouts are actix-web's defaults, which `HttpServer` used to apply.

use std::net::SocketAddr;
use std::time::Duration;

use actix_http::HttpMessage as _;
use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_server::{Server, ServerBuilder};
use actix_service::{fn_service, map_config, IntoServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use openssl::ssl::{AlpnError, SslAcceptorBuilder};

use std::sync::Arc;

use actix_service::{apply_fn_factory, Service as _, ServiceFactory};
use actix_web::rt::net::TcpStream;

use super::per_address::{PerAddress, Slot};
use super::AppState;
use crate::listeners::ip_filter::IpFilter;

/// Idle time between requests on a kept-alive connection.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Time for a client to send its request head (slowloris headers are cut).
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a client to close once we are done with a connection.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the web server listens and how many connections it holds.
pub struct Sockets {
    pub http: Option<SocketAddr>,
    pub https: Option<(SocketAddr, SslAcceptorBuilder)>,
    pub workers: usize,
    /// Across all workers.
    pub max_connections: usize,
    /// How long a stop waits for connections under way.
    pub shutdown_timeout_seconds: u64,
}

/// The addresses actually bound (port 0 becomes a real port).
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// One connection's HTTP service: our `Expect` answer, the client
/// certificate hook, and the AS2 routes. A macro because the stream type
/// (TCP or TLS) is part of the service's type.
macro_rules! as2_service {
    ($state:expr, $addr:expr) => {{
        let expect_state = $state.clone();
        let app_state = $state.clone();
        HttpService::build()
            .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
            .client_request_timeout(REQUEST_HEAD_TIMEOUT)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .local_addr($addr)
            .expect(fn_service(move |req: Request| {
                let refusal =
                    super::expect::refusal(req.method(), req.path(), req.headers(), &expect_state);
                async move {
                    match refusal {
                        None => Ok(req),
                        Some(response) => Err(Response::from(response)),
                    }
                }
            }))
            .on_connect_ext(|io: &_, extensions: &mut actix_http::Extensions| {
                super::tls::on_connect(io as &dyn std::any::Any, extensions)
            })
            .finish(map_config(
                App::new()
                    .app_data(app_state)
                    .configure(super::routes)
                    .into_factory(),
                |_| AppConfig::default(),
            ))
    }};
}

/// Binds the sockets and returns the server, not yet polled.
pub fn bind(sockets: Sockets, state: web::Data<AppState>) -> Result<(Server, Bound), String> {
    let mut builder: ServerBuilder = Server::build()
        .workers(sockets.workers)
        .max_concurrent_connections(sockets.max_connections.div_ceil(sockets.workers).max(1))
        .disable_signals()
        .shutdown_timeout(sockets.shutdown_timeout_seconds);
    let mut bound = Bound {
        http: None,
        https: None,
    };
    let limits = &state.config.web;
    let gate = ConnectionGate {
        open: Arc::default(),
        limit: limits.limits.max_connections_per_address,
        exempt: limits.trusted_proxies.clone(),
    };
    if let Some(addr) = sockets.http {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("binding HTTP on {addr}: {e}"))?;
        bound.http = Some(local_addr(&listener, addr));
        let state = state.clone();
        let gate = gate.clone();
        builder = builder
            .listen("as2-http", listener, move || {
                gate.wrap(as2_service!(state, addr).tcp())
            })
            .map_err(|e| format!("listening for HTTP on {addr}: {e}"))?;
    }
    if let Some((addr, mut acceptor)) = sockets.https {
        offer_http2(&mut acceptor).map_err(|e| format!("setting up HTTPS on {addr}: {e}"))?;
        let acceptor = acceptor.build();
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("binding HTTPS on {addr}: {e}"))?;
        bound.https = Some(local_addr(&listener, addr));
        builder = builder
            .listen("as2-https", listener, move || {
                gate.wrap(
                    as2_service!(state, addr).openssl_with_config(
                        acceptor.clone(),
                        actix_http::TlsAcceptorConfig::default()
                            .handshake_timeout(TLS_HANDSHAKE_TIMEOUT),
                    ),
                )
            })
            .map_err(|e| format!("listening for HTTPS on {addr}: {e}"))?;
    }
    Ok((builder.run(), bound))
}

/// Open connections per client address, bounded at accept: one address
/// cannot take the connections (and descriptors) every partner shares,
/// whether it sends requests or only holds sockets open. Trusted proxies
/// carry everyone's connections and are exempt.
#[derive(Clone)]
struct ConnectionGate {
    open: Arc<PerAddress>,
    limit: usize,
    exempt: Option<IpFilter>,
}

impl ConnectionGate {
    /// `factory` behind the gate: a connection over the address's limit is
    /// closed at once, before TLS or HTTP see it.
    fn wrap<SF>(
        &self,
        factory: SF,
    ) -> impl ServiceFactory<
        TcpStream,
        Config = (),
        Response = (),
        Error = SF::Error,
        InitError = SF::InitError,
    >
    where
        SF: ServiceFactory<TcpStream, Config = (), Response = ()>,
    {
        let gate = self.clone();
        apply_fn_factory(factory, move |stream: TcpStream, service: &SF::Service| {
            let admitted = gate.admit(&stream);
            let call = admitted.as_ref().map(|_| service.call(stream));
            async move {
                match call {
                    Some(connection) => {
                        let served = connection.await;
                        drop(admitted);
                        served
                    }
                    None => Ok(()),
                }
            }
        })
    }

    /// `None`: over the limit. `Some(None)`: exempt or address unknown.
    fn admit(&self, stream: &TcpStream) -> Option<Option<Slot>> {
        let Ok(peer) = stream.peer_addr() else {
            return Some(None);
        };
        let ip = peer.ip();
        if self.exempt.as_ref().is_some_and(|t| t.allows(ip)) {
            return Some(None);
        }
        match self.open.enter(ip, self.limit) {
            Some(slot) => Some(Some(slot)),
            None => {
                tracing::debug!(peer = %ip, limit = self.limit, "connection closed: too many open from this address");
                None
            }
        }
    }
}

fn local_addr(listener: &std::net::TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}

/// Offers HTTP/2 and HTTP/1.1 by ALPN, as actix-web's `bind_openssl` did.
fn offer_http2(acceptor: &mut SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
    acceptor.set_alpn_select_callback(|_, offered| {
        if offered.windows(3).any(|w| w == b"\x02h2") {
            Ok(b"h2")
        } else if offered.windows(9).any(|w| w == b"\x08http/1.1") {
            Ok(b"http/1.1")
        } else {
            Err(AlpnError::NOACK)
        }
    });
    acceptor.set_alpn_protos(b"\x08http/1.1\x02h2")
}
