//! The running Atom: opens the store, loads the listeners, starts the shared
//! web server (HTTP and HTTPS), the admin API and the MDN delivery task, and
//! shuts all of it down gracefully on SIGINT or SIGTERM (stop accepting,
//! finish in-flight requests, exit 0).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::admin::{self, metrics::Metrics, AdminState};
use crate::config::Config;
use crate::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};
use crate::engine::ProcessEngine;
use crate::keystore::Keystore;
use crate::listeners::Registry;
use crate::process::execution::Runner;
use crate::process::history::HistoryWriter;
use crate::process::workers::Executor;
use crate::server::mdn_delivery::{Delivery, MdnSender, RetryPolicy};
use crate::server::{self, AppState};
use crate::store::group_commit::GroupCommitter;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE_SECONDS: u64 = 30;

/// A start-up failure, named for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Where the servers ended up listening (ports may have been 0).
#[derive(Debug, Clone)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// The wasmtime engine, sized for every worker that may run a guest at once.
fn start_engine(config: &Config) -> Result<Arc<dyn ProcessEngine>, StartError> {
    let quotas = &config.quotas;
    let max_instances =
        (quotas.general_workers + quotas.low_latency.max_running_executions + 4) as u32;
    let engine = WasmtimeEngine::new(EngineSettings {
        max_instances,
        max_memory: config.engine_max_memory,
        cache_dir: Some(config.data_dir.join("cache").join("modules")),
    })
    .map_err(StartError)?;
    Ok(engine)
}

/// Runs the Atom until a shutdown signal.
pub async fn run(config: Config) -> Result<(), StartError> {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&config.data_dir).map_err(|e| StartError(e.to_string()))?);
    let keystore = Keystore::open(&config.data_dir);
    let engine = start_engine(&config)?;
    let metrics = Arc::new(Metrics::new().map_err(|e| StartError(format!("metrics: {e}")))?);
    let registry = Arc::new(Registry::new(
        config.processes_dir.clone(),
        keystore.clone(),
        engine,
        config.data_dir.clone(),
        store.clone(),
    ));
    registry.load_all().map_err(StartError)?;
    let committer = GroupCommitter::start(store.clone(), config.data_dir.clone())
        .map_err(|e| StartError(format!("starting the group committer: {e}")))?;
    let history = HistoryWriter::start(committer.clone())
        .map_err(|e| StartError(format!("starting the history writer: {e}")))?;
    let runner = Arc::new(Runner::new(
        config.data_dir.clone(),
        history,
        metrics.clone(),
    ));
    let executor = Executor::start(runner, config.quotas)
        .map_err(|e| StartError(format!("starting the workers: {e}")))?;
    let recovered = executor
        .recover(store.as_ref(), &registry)
        .map_err(|e| StartError(format!("recovering executions: {e}")))?;
    if recovered > 0 {
        tracing::info!(
            executions = recovered,
            "interrupted executions queued again"
        );
    }
    let _watcher = crate::listeners::watcher::start(registry.clone(), config.processes_dir.clone())
        .map_err(StartError)?;
    let token = admin::ensure_token(&config.data_dir).map_err(|e| {
        StartError(format!(
            "{}: {e}",
            admin::token_path(&config.data_dir).display()
        ))
    })?;
    let policy = RetryPolicy {
        first_delay: std::time::Duration::from_secs(config.async_mdn.first_retry_seconds),
        max_delay: std::time::Duration::from_secs(config.async_mdn.max_retry_seconds),
        give_up_after: std::time::Duration::from_secs(config.async_mdn.give_up_after_hours * 3600),
    };
    let mdn_sender = MdnSender::start(store.clone(), metrics.clone(), policy);
    crate::store::retention::start(
        store.clone(),
        config.retention_days,
        std::time::Duration::from_secs(u64::from(config.purge_interval_minutes) * 60),
    )
    .map_err(|e| StartError(format!("starting the retention thread: {e}")))?;
    requeue_pending_mdns(&store, &mdn_sender);

    let state = web::Data::new(AppState {
        config: config.clone(),
        registry: registry.clone(),
        store: store.clone(),
        committer,
        executor,
        metrics: metrics.clone(),
        mdn_sender,
        reporting_ua: format!("Atom AS2 {} ({})", env!("CARGO_PKG_VERSION"), config.name),
        in_flight: Default::default(),
    });
    let app_state = state.clone();
    let mut web_server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(server::routes)
    })
    .on_connect(server::tls::on_connect)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE_SECONDS);
    if config.web.worker_threads > 0 {
        web_server = web_server.workers(config.web.worker_threads);
    }
    let mut bound = Bound {
        http: None,
        https: None,
        admin: config.admin_address,
    };
    if let Some(port) = config.web.http_port {
        let addr = SocketAddr::new(config.web.bind_address, port);
        web_server = web_server
            .bind(addr)
            .map_err(|e| StartError(format!("binding HTTP on {addr}: {e}")))?;
    }
    if let Some(https) = &config.web.https {
        let acceptor = server::tls::acceptor(https, &keystore, &config.name).map_err(StartError)?;
        let addr = SocketAddr::new(config.web.bind_address, https.port);
        web_server = web_server
            .bind_openssl(addr, acceptor)
            .map_err(|e| StartError(format!("binding HTTPS on {addr}: {e}")))?;
    }
    // Addresses come back in bind order: HTTP first, then HTTPS.
    let mut addrs = web_server.addrs().into_iter();
    if config.web.http_port.is_some() {
        bound.http = addrs.next();
    }
    if config.web.https.is_some() {
        bound.https = addrs.next();
    }
    let admin_state = web::Data::new(AdminState {
        token,
        registry,
        store,
        metrics,
        default_mode: config.quotas.default_as2_workload,
        executor: state.executor.clone(),
    });
    let admin_server = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .configure(admin::routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(config.admin_address)
    .map_err(|e| {
        StartError(format!(
            "binding the admin API on {}: {e}",
            config.admin_address
        ))
    })?;
    if let Some(addr) = admin_server.addrs().first() {
        bound.admin = *addr;
    }
    let web_server = web_server.run();
    let admin_server = admin_server.run();
    let (web_handle, admin_handle) = (web_server.handle(), admin_server.handle());
    announce(&config, &bound);

    let web_task = tokio::spawn(web_server);
    let admin_task = tokio::spawn(admin_server);
    shutdown_signal().await;
    tracing::info!("shutting down: no new requests; finishing in-flight ones");
    admin_handle.stop(true).await;
    web_handle.stop(true).await;
    for (name, task) in [("web server", web_task), ("admin API", admin_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(server = name, error = %e, "server stopped with an error")
            }
            Err(e) => tracing::error!(server = name, error = %e, "server task failed"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// One line on stdout that scripts (and tests) wait for, and a log line.
fn announce(config: &Config, bound: &Bound) {
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    println!(
        "atom ready: http={} https={} admin={}",
        show(bound.http),
        show(bound.https),
        bound.admin
    );
    tracing::info!(
        name = %config.name, http = %show(bound.http), https = %show(bound.https), admin = %bound.admin,
        data_dir = %config.data_dir.display(), processes_dir = %config.processes_dir.display(), "atom ready"
    );
}

fn requeue_pending_mdns(store: &Arc<dyn Store>, sender: &MdnSender) {
    match store.pending_async_mdns() {
        Ok(pending) => {
            for (id, receipt) in pending {
                if let Some(url) = receipt.mdn_url {
                    tracing::info!(record = id, %url, "queueing undelivered asynchronous MDN again");
                    sender.send(Delivery {
                        record_id: id,
                        url,
                        headers: receipt.headers,
                        body: receipt.body,
                    });
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reading pending asynchronous MDNs"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the Atom");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
