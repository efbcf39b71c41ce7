//! The shared store of a Molecule: PostgreSQL, behind the same synchronous
//! [`Store`](super::Store) and [`Documents`](super::documents::Documents)
//! traits as the embedded SQLite store.
//!
//! # Bridge
//!
//! The traits stay synchronous (their callers are blocking threads, but
//! may also be actix or tokio threads). [`PgStore`] owns a small tokio
//! runtime (2 workers, `atom-pg`) and a deadpool of connections; each call
//! spawns its work there and waits on a std channel. It never calls
//! `Handle::block_on`, which would panic on a thread that already runs a
//! runtime.
//!
//! # Schema ([`schema`])
//!
//! Versioned migrations, recorded in `schema_migrations`, applied under a
//! transaction-scoped advisory lock so that nodes starting together apply
//! each exactly once. The tables mirror SQLite's (`messages`, `executions`,
//! `listener_state`, `store_probe`) with `bigint` identity ids, and:
//!
//! * the duplicate key is the same as SQLite's: the unique partial index
//!   `messages_receipt_key (as2_from, message_id) WHERE holds_id`. A copy
//!   claims it with `INSERT .. ON CONFLICT DO NOTHING` inside the batch
//!   transaction; a conflicting copy of another node's open transaction
//!   waits for it, so of two concurrent copies exactly one is stored and
//!   the other gets its receipt (see [`store`]);
//! * documents are `documents` (id, group, name, size, created) and
//!   `document_chunks` (document, seq, 1 MiB of `bytea`), see [`documents`].
//!
//! # Durability
//!
//! Rows are committed with `synchronous_commit = on` (set on every new
//! connection, and `SET LOCAL` in the batch transaction): committed
//! means flushed to the WAL. Documents are written in their own
//! transactions with `synchronous_commit = off`, which commit without
//! waiting for the flush. The rows that reference a document are committed
//! after the document's transaction committed, so their commit record
//! comes later in the one WAL, and flushing it flushes the document too:
//! the counterpart of "write files unsynced, then `syncfs`" of
//! [`super::files`]. A crash can lose documents whose rows were never
//! committed; those are never read.

mod documents;
mod outbox;
mod schema;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;

use super::{Result, StoreError, StoreErrorKind};

pub use documents::PgDocuments;
pub use schema::SCHEMA_VERSION;

/// Connections per node.
const POOL_SIZE: usize = 16;
/// A connection attempt (when the URL does not set `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// One store operation, end to end. Past it the caller gets a `Busy`
/// error; the work is abandoned (a transaction not yet committed rolls
/// back; one whose commit was already sent may still have committed,
/// exactly as when a connection drops: a sender that retries then gets its
/// duplicate's receipt).
const OPERATION_LIMIT: Duration = Duration::from_secs(60);

/// The PostgreSQL store.
pub struct PgStore {
    shared: Arc<Shared>,
}

/// The runtime and the pool, shared by a store and its documents.
struct Shared {
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    connections: Connections,
}

/// What a task needs to get a connection (never the runtime itself: a
/// task holding the last reference to its runtime could not drop it).
#[derive(Clone)]
struct Connections {
    pool: Pool,
    /// The URL without its password, for errors.
    url: Arc<str>,
}

impl Connections {
    async fn get(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| pool_error(&self.url, e))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.connections.pool.close();
        // Not a blocking drop: this may run on a thread of another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    /// Runs `work` on the runtime and waits for its outcome on this thread.
    fn run<T, F, Fut>(&self, context: &str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Connections) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let future = work(self.connections.clone());
        let owned_context = context.to_string();
        let Some(runtime) = &self.runtime else {
            return Err(stopped(context));
        };
        runtime.spawn(async move {
            let outcome = match tokio::time::timeout(OPERATION_LIMIT, future).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::of_kind(
                    StoreErrorKind::Busy,
                    &owned_context,
                    format!(
                        "no answer from PostgreSQL within {} s",
                        OPERATION_LIMIT.as_secs()
                    ),
                )),
            };
            let _ = reply.send(outcome);
        });
        answer.recv().unwrap_or_else(|_| Err(stopped(context)))
    }

    /// Spawns `work` on the runtime without waiting (for streaming calls
    /// that talk to it over channels).
    fn spawn<F>(&self, context: &str, work: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(stopped(context));
        };
        runtime.spawn(work);
        Ok(())
    }
}

/// The task was dropped (a panic in it, or the runtime shutting down).
fn stopped(context: &str) -> StoreError {
    StoreError::new(context, "the PostgreSQL client task stopped")
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or `key=value` string),
    /// then brings the schema up to date. TLS is used when the URL sets
    /// `sslmode=require` (the server's certificate is verified against the
    /// system's roots, stricter than libpq's `require`); otherwise
    /// (`disable`, or `prefer`, tokio-postgres's default) the connection is
    /// plain TCP or a unix socket, meant for loopback and trusted networks.
    pub fn open(url: &str) -> Result<PgStore> {
        PgStore::open_with_password(url, None)
    }

    /// Like [`PgStore::open`], with the password given apart from the URL
    /// (from `ATOM_STORE_PASSWORD` or a file; never shown in messages).
    pub fn open_with_password(url: &str, password: Option<&str>) -> Result<PgStore> {
        let shown = redact(url);
        let context = format!("connecting to {shown}");
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::new(&context, describe(&e)))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("atom");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.get_ssl_mode() {
            SslMode::Require => {
                let connector = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                    .map_err(|e| StoreError::new(&context, format!("setting up TLS: {e}")))?
                    .build();
                Manager::from_config(
                    config,
                    postgres_openssl::MakeTlsConnector::new(connector),
                    manager_config,
                )
            }
            // Explicitly without TLS: `disable`, and `prefer` too (with
            // NoTls tokio-postgres never attempts TLS).
            _ => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atom-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("starting the PostgreSQL client runtime", &e, &e))?;
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            // Every write of the store is durable when it returns, whatever
            // the server's default; documents opt out per transaction. (A
            // SET rather than the `options` startup parameter, which
            // PgBouncer refuses by default.)
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET synchronous_commit = on")
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| StoreError::new(&context, e))?;
        let shared = Arc::new(Shared {
            runtime: Some(runtime),
            connections: Connections {
                pool,
                url: shown.into(),
            },
        });
        shared.run(&context, |connections| async move {
            let mut client = connections.get().await?;
            schema::migrate(&mut client).await
        })?;
        Ok(PgStore { shared })
    }

    /// The documents kept in the same database, over the same connections.
    pub fn documents(&self) -> PgDocuments {
        PgDocuments::new(self.shared.clone())
    }
}

/// `url` without its password, for messages: the password of a
/// `postgres://user:password@host/db` URL, and any `password` parameter
/// (`?password=..` or `password=..` of a key/value string), are dropped.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((user_info, hosts)) => {
                let user = user_info.split(':').next().unwrap_or_default();
                format!("{user}@{hosts}")
            }
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        !pair
                            .split('=')
                            .next()
                            .is_some_and(|key| key.eq_ignore_ascii_case("password"))
                    })
                    .collect();
                if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => tail.to_string(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    // key=value pairs, values optionally single-quoted (with \' inside).
    let mut kept = Vec::new();
    let mut rest = url.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or((rest, ""));
        let key = key.trim();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = i;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let value = &after[..(end + 2).min(after.len())];
            (value, &quoted[(end + 1).min(quoted.len())..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if !key.eq_ignore_ascii_case("password") {
            kept.push(format!("{key}={value}"));
        }
        rest = remainder.trim_start();
    }
    kept.join(" ")
}

/// What a SQLSTATE tells a caller.
pub(crate) fn kind_of_state(state: &SqlState) -> StoreErrorKind {
    let code = state.code();
    if *state == SqlState::DISK_FULL {
        StoreErrorKind::Full
    } else if *state == SqlState::READ_ONLY_SQL_TRANSACTION {
        StoreErrorKind::ReadOnly
    } else if *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED
        || *state == SqlState::LOCK_NOT_AVAILABLE
        || *state == SqlState::CANNOT_CONNECT_NOW
        || *state == SqlState::ADMIN_SHUTDOWN
        || *state == SqlState::CRASH_SHUTDOWN
        || *state == SqlState::TOO_MANY_CONNECTIONS
        // Class 08: connection exceptions.
        || code.starts_with("08")
    {
        StoreErrorKind::Busy
    } else {
        StoreErrorKind::Other
    }
}

/// A PostgreSQL error as a store error: the kind from its SQLSTATE, and
/// for errors without one (the connection), `Busy` when the connection
/// failed, closed or timed out.
pub(crate) fn store_error(context: &str, error: &tokio_postgres::Error) -> StoreError {
    let kind = match error.code() {
        Some(state) => kind_of_state(state),
        None if error.is_closed() => StoreErrorKind::Busy,
        None => {
            let io = std::error::Error::source(error)
                .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
            // tokio-postgres's own timeout carries no source.
            if io || error.to_string().starts_with("timeout") {
                StoreErrorKind::Busy
            } else {
                StoreErrorKind::Other
            }
        }
    };
    StoreError::of_kind(kind, context, describe(error))
}

/// The message of a PostgreSQL error: the server's message and SQLSTATE,
/// or the client's error with its cause.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// A failure to get a connection from the pool.
fn pool_error(url: &str, error: PoolError) -> StoreError {
    let context = format!("connecting to {url}");
    match error {
        PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => {
            store_error(&context, &e)
        }
        PoolError::Timeout(_) => StoreError::of_kind(
            StoreErrorKind::Busy,
            &context,
            "no connection free or made in time",
        ),
        other => StoreError::new(&context, other),
    }
}

/// A closure mapping a PostgreSQL error to a store error.
fn err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |e| store_error(context, &e)
}

/// A count or size for a `bigint` column.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_passwords_only() {
        for (url, shown) in [
            (
                "postgres://atom:s3cret@127.0.0.1:5432/atom",
                "postgres://atom@127.0.0.1:5432/atom",
            ),
            (
                "postgresql://atom:p%40ss@db1:5432,db2:5433/atom?sslmode=require&password=x&connect_timeout=5",
                "postgresql://atom@db1:5432,db2:5433/atom?sslmode=require&connect_timeout=5",
            ),
            (
                "postgres://atom@127.0.0.1/atom?password=x",
                "postgres://atom@127.0.0.1/atom",
            ),
            ("postgres://127.0.0.1/atom", "postgres://127.0.0.1/atom"),
            ("postgres://a:b:c@h", "postgres://a@h"),
            (
                "host=127.0.0.1 user=atom password=s3cret dbname=atom",
                "host=127.0.0.1 user=atom dbname=atom",
            ),
            (
                "host=h password = 'it\\'s secret' user='a b'",
                "host=h user='a b'",
            ),
            ("password=x", ""),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        for (state, kind) in [
            (SqlState::DISK_FULL, StoreErrorKind::Full),
            (
                SqlState::READ_ONLY_SQL_TRANSACTION,
                StoreErrorKind::ReadOnly,
            ),
            (SqlState::T_R_SERIALIZATION_FAILURE, StoreErrorKind::Busy),
            (SqlState::T_R_DEADLOCK_DETECTED, StoreErrorKind::Busy),
            (SqlState::LOCK_NOT_AVAILABLE, StoreErrorKind::Busy),
            (SqlState::CANNOT_CONNECT_NOW, StoreErrorKind::Busy),
            (SqlState::ADMIN_SHUTDOWN, StoreErrorKind::Busy),
            (SqlState::CONNECTION_FAILURE, StoreErrorKind::Busy),
            (SqlState::UNIQUE_VIOLATION, StoreErrorKind::Other),
            (SqlState::UNDEFINED_TABLE, StoreErrorKind::Other),
        ] {
            assert_eq!(kind_of_state(&state), kind, "{}", state.code());
        }
    }
}
