//! The running Atom: opens the store, loads the listeners, starts the shared
//! web server (HTTP and HTTPS), the admin API and the MDN delivery task, and
//! drains all of it on SIGINT or SIGTERM ([`crate::shutdown`]):
//!
//! ```text
//! signal ─▶ new AS2 requests 503, /health 503 "draining"
//!        ─▶ requests under way finish (their receipts are committed)
//!        ─▶ running executions finish; nothing new starts (queued ones stay
//!           queued in the store for the next start)
//!        ─▶ async MDN deliveries stop between attempts (left pending)
//!        ─▶ web servers stop ─▶ history and committer flushed ─▶ exit 0
//! ```
//!
//! All of it within `shutdown.drain_seconds`; an execution still running
//! then is cut off and recovered at the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::admin::{self, metrics::Metrics, AdminState};
use crate::config::Config;
use crate::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};
use crate::engine::ProcessEngine;
use crate::keystore::Keystore;
use crate::listeners::Registry;
use crate::process::execution::Job;
use crate::process::execution::Runner;
use crate::process::history::HistoryWriter;
use crate::process::leases::Leases;
use crate::process::workers::Executor;
use crate::server::mdn_delivery::{MdnSender, RetryPolicy};
use crate::server::{self, AppState};
use crate::shutdown::Shutdown;
use crate::store::documents::Documents;
use crate::store::group_commit::GroupCommitter;
use crate::store::health::StoreHealth;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// How long the web servers wait for connections once the drain has
/// waited for the requests under way.
const SERVER_STOP_SECONDS: u64 = 5;
/// The history and the committer get at least this long to flush, even
/// after a drain that used up its time.
const FLUSH_SECONDS: u64 = 10;

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
    pub console: Option<SocketAddr>,
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
    crate::store::private::secure(&config.data_dir).map_err(StartError)?;
    return_memory_after_bursts();
    let (store, documents) = open_store(&config)?;
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
    registry.set_allowed_directories(config.delivery.allowed_directories.clone());
    registry.set_partners_dir(config.partners_dir.clone());
    // In a Molecule the store's bundles are what every node serves.
    let bundle_sync = config.postgres.as_ref().map(|_| {
        Arc::new(crate::listeners::bundle_sync::BundleSync::new(
            registry.clone(),
            store.clone(),
            config.processes_dir.clone(),
            &config.molecule.node_id,
        ))
    });
    if let Some(sync) = &bundle_sync {
        sync.adopt_heads()
            .map_err(|e| StartError(format!("taking the Molecule's bundles: {e}")))?;
    }
    registry.load_all().map_err(StartError)?;
    let shutdown = Shutdown::new();
    let health = Arc::new(StoreHealth::default());
    health
        .start_probe(store.clone(), config.data_dir.clone(), shutdown.clone())
        .map_err(|e| StartError(format!("starting the store probe: {e}")))?;
    let committer = GroupCommitter::start(
        store.clone(),
        documents.clone(),
        health.clone(),
        config.commit_timeout,
    )
    .map_err(|e| StartError(format!("starting the group committer: {e}")))?;
    let history = HistoryWriter::start(committer.clone())
        .map_err(|e| StartError(format!("starting the history writer: {e}")))?;
    let runner = Arc::new(Runner::new(
        store.clone(),
        documents.clone(),
        history.clone(),
        metrics.clone(),
    ));
    let leases = Arc::new(Leases::new(&config.molecule.node_id, config.molecule.lease));
    let executor = Executor::start(runner, config.quotas, leases)
        .map_err(|e| StartError(format!("starting the workers: {e}")))?;
    {
        // A receipt committed after its sender gave up waiting still runs.
        let (executor, registry) = (executor.clone(), registry.clone());
        committer.on_late_execution(Box::new(move |record| {
            match registry.spec(&record.process) {
                Some(spec) => executor.submit(Job { spec, record }, None),
                None => tracing::error!(execution = %record.id, process = %record.process,
                    "late execution's process is not deployed; it is recovered at the next start"),
            }
        }));
    }
    // Before this node takes back "its own" work: no live namesake.
    crate::molecule::check_unique(
        store.as_ref(),
        &config.molecule.node_id,
        config.molecule.lease,
    )
    .map_err(StartError)?;
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
    let mdn_sender = MdnSender::start(
        store.clone(),
        metrics.clone(),
        policy,
        shutdown.clone(),
        Arc::new(Leases::new(&config.molecule.node_id, config.molecule.lease)),
    );
    crate::store::retention::start(
        store.clone(),
        documents.clone(),
        config.retention_days,
        std::time::Duration::from_secs(u64::from(config.purge_interval_minutes) * 60),
    )
    .map_err(|e| StartError(format!("starting the retention thread: {e}")))?;
    match mdn_sender.take_over(store.as_ref(), &registry, true) {
        Ok(0) => {}
        Ok(count) => tracing::info!(
            receipts = count,
            "undelivered asynchronous MDNs queued again"
        ),
        Err(e) => {
            tracing::error!(error = %e, "claiming pending asynchronous MDNs; the lease keeper tries again")
        }
    }
    crate::process::leases::start_keeper(
        executor.clone(),
        mdn_sender.clone(),
        registry.clone(),
        store.clone(),
        shutdown.clone(),
    )
    .map_err(|e| StartError(format!("starting the lease keeper: {e}")))?;
    crate::alerts::start(
        config.alerts.clone(),
        crate::alerts::Sources {
            atom_name: config.name.clone(),
            keystore: keystore.clone(),
            registry: registry.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        },
        shutdown.clone(),
    )
    .map_err(StartError)?;
    if let Some(sync) = bundle_sync {
        crate::listeners::bundle_sync::start(sync, shutdown.clone())
            .map_err(|e| StartError(format!("starting the bundle sync: {e}")))?;
    }
    // Other nodes' pauses and restarts: only a shared store has any.
    if config.postgres.is_some() {
        crate::listeners::follower::start(registry.clone(), shutdown.clone())
            .map_err(|e| StartError(format!("starting the listener follower: {e}")))?;
    }

    let state = web::Data::new(AppState {
        config: config.clone(),
        registry: registry.clone(),
        store: store.clone(),
        documents: documents.clone(),
        committer: committer.clone(),
        executor: executor.clone(),
        metrics: metrics.clone(),
        mdn_sender: mdn_sender.clone(),
        reporting_ua: format!("Atom AS2 {} ({})", env!("CARGO_PKG_VERSION"), config.name),
        in_flight: Default::default(),
        health,
        shutdown: shutdown.clone(),
        receiving: Default::default(),
        per_address: Default::default(),
    });
    let workers = if config.web.worker_threads > 0 {
        config.web.worker_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    // Connections stay well below the file limit, so that the store, the
    // spool, the bundles and /health always have descriptors left.
    let file_limit = raise_file_limit();
    let headroom = 512;
    let connections = config
        .web
        .limits
        .max_connections
        .min(file_limit.saturating_sub(headroom).max(64) as usize);
    if connections < config.web.limits.max_connections {
        tracing::warn!(
            configured = config.web.limits.max_connections,
            used = connections,
            file_limit,
            "shared_web_server.max_connections lowered to stay below the open file limit"
        );
    }
    let https = match &config.web.https {
        Some(https) => {
            let acceptor =
                server::tls::acceptor(https, &keystore, &config.name).map_err(StartError)?;
            Some((
                SocketAddr::new(config.web.bind_address, https.port),
                acceptor,
            ))
        }
        None => None,
    };
    let sockets = server::listen::Sockets {
        http: config
            .web
            .http_port
            .map(|port| SocketAddr::new(config.web.bind_address, port)),
        https,
        workers,
        max_connections: connections,
        shutdown_timeout_seconds: SERVER_STOP_SECONDS,
    };
    let (web_server, web_bound) =
        server::listen::bind(sockets, state.clone()).map_err(StartError)?;
    let mut bound = Bound {
        http: web_bound.http,
        https: web_bound.https,
        admin: config.admin_address,
        console: None,
    };
    let admin_state = web::Data::new(AdminState {
        token,
        registry,
        store: store.clone(),
        documents,
        metrics,
        default_mode: config.quotas.default_as2_workload,
        executor: state.executor.clone(),
        lease: config.molecule.lease,
    });
    let console = match &config.console {
        Some(console) => Some(
            crate::console::bind(console, &config.data_dir, admin_state.clone())
                .map_err(StartError)?,
        ),
        None => None,
    };
    bound.console = console.as_ref().map(|c| c.address);
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
    let admin_server = admin_server.run();
    let (web_handle, admin_handle) = (web_server.handle(), admin_server.handle());
    announce(&config, &bound);
    let node = Arc::new(crate::molecule::Node::new(
        &config.molecule.node_id,
        bound
            .http
            .or(bound.https)
            .map(|a| a.to_string())
            .unwrap_or_default(),
    ));
    crate::molecule::start_heartbeat(
        node.clone(),
        store.clone(),
        executor.clone(),
        mdn_sender.clone(),
        shutdown.clone(),
    )
    .map_err(|e| StartError(format!("starting the heartbeat: {e}")))?;

    let web_task = tokio::spawn(web_server);
    let admin_task = tokio::spawn(admin_server);
    let console_handle = console.as_ref().map(|c| c.server.handle());
    let console_task = console.map(|c| tokio::spawn(c.server));
    crate::shutdown::signal().await;
    shutdown.trigger();
    let drain = Drain {
        deadline: tokio::time::Instant::now() + config.drain,
        state: state.clone(),
        executor,
        mdn_sender,
        history,
        node,
    };
    drain.run().await;
    admin_handle.stop(true).await;
    if let Some(handle) = console_handle {
        handle.stop(true).await;
    }
    web_handle.stop(true).await;
    let tasks = [("web server", web_task), ("admin API", admin_task)]
        .into_iter()
        .chain(console_task.map(|task| ("console", task)));
    for (name, task) in tasks {
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

/// What the drain waits for, in order, all within one deadline.
struct Drain {
    deadline: tokio::time::Instant,
    state: web::Data<AppState>,
    executor: Arc<Executor>,
    mdn_sender: MdnSender,
    history: HistoryWriter,
    node: Arc<crate::molecule::Node>,
}

impl Drain {
    async fn run(self) {
        let drain_seconds = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs();
        tracing::info!(
            drain_seconds,
            "shutting down: new requests get 503; waiting for requests and executions under way"
        );
        // 1. Requests under way: their receipts get committed and their
        //    executions handed to the workers.
        while self
            .state
            .receiving
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && tokio::time::Instant::now() < self.deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // 2. Running executions finish; nothing new starts.
        let executor = self.executor.clone();
        let deadline = self.deadline.into_std();
        match tokio::task::spawn_blocking(move || executor.drain(deadline)).await {
            Ok(report) if report.cut_off == 0 => {
                tracing::info!(finished = report.finished, "executions under way finished")
            }
            Ok(report) => tracing::warn!(
                finished = report.finished,
                cut_off = report.cut_off,
                "drain time over: executions still running are cut off and run again at the next start"
            ),
            Err(e) => tracing::error!(error = %e, "waiting for executions failed"),
        }
        // 3. Async MDN deliveries stop between attempts.
        if !self.mdn_sender.drain(self.deadline).await {
            tracing::warn!(
                "asynchronous MDN attempts still under way are cut off; they stay pending"
            );
        }
        // 4. Every final state durable: a completed execution never runs again.
        let history = self.history.clone();
        let flush_for = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_secs(FLUSH_SECONDS));
        match tokio::task::spawn_blocking(move || history.flush(flush_for)).await {
            Ok(Ok(())) => tracing::info!("execution history and receipts flushed"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flushing the execution history failed; unrecorded executions run again at the next start")
            }
            Err(e) => tracing::error!(error = %e, "flushing the execution history failed"),
        }
        // 5. Executions still queued and receipts still pending here:
        //    another node may take them now.
        let (executor, store) = (self.executor.clone(), self.state.store.clone());
        let mdns = self.mdn_sender.clone();
        let node = self.node.clone();
        let _ = tokio::task::spawn_blocking(move || {
            executor.release_queued(store.as_ref());
            mdns.release_pending(store.as_ref());
            crate::molecule::final_beat(&node, store.as_ref());
        })
        .await;
    }
}

/// The message store and where its documents live.
type Stores = (Arc<dyn Store>, Arc<dyn Documents>);

/// The store and the documents: PostgreSQL shared by a Molecule when
/// `store.postgres` is set, else SQLite and files in the data directory.
fn open_store(config: &Config) -> Result<Stores, StartError> {
    let Some(pg) = &config.postgres else {
        let store = SqliteStore::open(&config.data_dir).map_err(|e| StartError(e.to_string()))?;
        let documents = Arc::new(store.documents(&config.data_dir));
        return Ok((Arc::new(store), documents));
    };
    let password = match (std::env::var("ATOM_STORE_PASSWORD"), &pg.password_file) {
        (Ok(password), _) => Some(password),
        (Err(_), Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| {
                    StartError(format!(
                        "store.postgres.password_file {}: {e}",
                        file.display()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        (Err(_), None) => None,
    };
    let store = crate::store::postgres::PgStore::open_with_password(&pg.url, password.as_deref())
        .map_err(|e| StartError(e.to_string()))?;
    tracing::info!(url = %crate::store::postgres::redact(&pg.url), node = %config.molecule.node_id,
        "store: PostgreSQL (a Molecule node)");
    let documents = Arc::new(store.documents());
    Ok((Arc::new(store), documents))
}

/// Large buffers (a big message's body, its layers) are mapped and
/// unmapped on their own instead of staying in glibc's heap: by default
/// glibc raises its mmap threshold after each large free, so after a burst of
/// large messages the memory stays with the process. Measured on 8 × 85 MB
/// compressed messages at concurrency 4 (release build): 61-67 MB resident
/// 3 s after the burst by default, 27 MB with this (fresh: 24 MB); peak 650
/// -> 613 MB; throughput the same within noise. Small allocations (10 KiB
/// messages) are below the threshold and unaffected.
fn return_memory_after_bursts() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets glibc allocator parameters, under
        // glibc's own locks.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}

/// Raises the soft limit of open files to the hard limit; returns the limit
/// in force.
fn raise_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// One line on stdout that scripts (and tests) wait for, and a log line.
fn announce(config: &Config, bound: &Bound) {
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    println!(
        "atom ready: http={} https={} admin={} console={}",
        show(bound.http),
        show(bound.https),
        bound.admin,
        show(bound.console)
    );
    tracing::info!(
        name = %config.name, http = %show(bound.http), https = %show(bound.https), admin = %bound.admin, console = %show(bound.console),
        data_dir = %config.data_dir.display(), processes_dir = %config.processes_dir.display(), "atom ready"
    );
}
