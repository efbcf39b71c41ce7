//! Reading a request body under a size limit. Small bodies stay in memory;
//! large ones are streamed to an anonymous file in the spool folder and
//! opened from there as a stream ([`atom_connectors::as2::stream`]), so a
//! 1 GiB upload costs buffers, not its size, in memory.
//!
//! A body must keep coming: nothing for the idle timeout, or (once that
//! much time has passed) less than the minimum average rate, and it is cut
//! with 408. A 1 GiB upload over a slow partner link gets through; a
//! connection dripping one byte at a time to hold a file descriptor does
//! not.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use std::time::{Duration, Instant};

use actix_web::web;
use atom_connectors::as2::stream::Source;
use futures_util::StreamExt;

use crate::config::ConnectionLimits;

/// How often a silent body is checked against its limits.
const TICK: Duration = Duration::from_secs(1);

/// Bodies up to this size stay in memory.
pub const MEMORY_LIMIT: usize = 8 << 20;

/// A received body.
pub enum Body {
    Memory(Vec<u8>),
    /// An anonymous file in the spool folder (not synced: the stored copy
    /// is made durable with the receipt): the `head` given to [`read`]
    /// (the request's rendered headers), then the body, which is `source`.
    /// So the file is the raw request as stored, and a file store links it
    /// into place instead of copying it.
    Spooled {
        file: Arc<std::fs::File>,
        source: Source,
    },
}

impl Body {
    pub fn size(&self) -> u64 {
        match self {
            Body::Memory(v) => v.len() as u64,
            Body::Spooled { source, .. } => source.len(),
        }
    }

    /// The first `n` bytes.
    pub fn prefix(&self, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Body::Memory(v) => Ok(v[..v.len().min(n)].to_vec()),
            Body::Spooled { source, .. } => source.prefix(n),
        }
    }
}

/// Why the body could not be read.
pub enum BodyError {
    TooLarge {
        limit: u64,
    },
    /// Idle too long, or slower than the minimum rate.
    TooSlow(String),
    Io(String),
    Client(String),
}

pub async fn read(
    mut payload: web::Payload,
    limit: u64,
    spool_dir: &Path,
    pace: &ConnectionLimits,
    head: &[u8],
) -> Result<Body, BodyError> {
    let mut memory: Vec<u8> = Vec::new();
    let mut spool: Option<std::fs::File> = None;
    let mut total: u64 = 0;
    let started = Instant::now();
    let mut last_data = started;
    loop {
        // `next` is cancel-safe: a tick that passes loses no data.
        let chunk = match tokio::time::timeout(TICK, payload.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                check_pace(total, started, last_data, pace)?;
                continue;
            }
        };
        let chunk = chunk.map_err(|e| BodyError::Client(format!("reading request body: {e}")))?;
        last_data = Instant::now();
        check_pace(total, started, last_data, pace)?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match spool.as_mut() {
            Some(file) => file
                .write_all(&chunk)
                .map_err(|e| BodyError::Io(format!("spooling request body: {e}")))?,
            None if memory.len() + chunk.len() > MEMORY_LIMIT => {
                std::fs::create_dir_all(spool_dir)
                    .map_err(|e| BodyError::Io(format!("{}: {e}", spool_dir.display())))?;
                let mut file = tempfile::tempfile_in(spool_dir)
                    .map_err(|e| BodyError::Io(format!("creating spool file: {e}")))?;
                file.write_all(head)
                    .and_then(|_| file.write_all(&memory))
                    .and_then(|_| file.write_all(&chunk))
                    .map_err(|e| BodyError::Io(format!("spooling request body: {e}")))?;
                memory = Vec::new();
                spool = Some(file);
            }
            None => memory.extend_from_slice(&chunk),
        }
    }
    match spool {
        None => Ok(Body::Memory(memory)),
        Some(file) => {
            let file = Arc::new(file);
            Source::whole(file.clone())
                .map(|whole| Body::Spooled {
                    file,
                    source: whole.narrow(head.len() as u64, whole.len()),
                })
                .map_err(|e| BodyError::Io(format!("spooling request body: {e}")))
        }
    }
}

/// Cuts a body that went silent, or that arrives slower than the minimum
/// rate once the idle timeout has passed since it started.
fn check_pace(
    total: u64,
    started: Instant,
    last_data: Instant,
    pace: &ConnectionLimits,
) -> Result<(), BodyError> {
    let idle = last_data.elapsed();
    if idle >= pace.body_idle_timeout {
        return Err(BodyError::TooSlow(format!(
            "no request body data for {} s; the connection is closed",
            idle.as_secs()
        )));
    }
    let elapsed = started.elapsed();
    if elapsed >= pace.body_idle_timeout {
        let rate = total as f64 / elapsed.as_secs_f64();
        if rate < pace.min_body_rate as f64 {
            return Err(BodyError::TooSlow(format!(
                "request body arrives at {rate:.0} bytes/s, below the minimum of {} bytes/s; the connection is closed",
                pace.min_body_rate
            )));
        }
    }
    Ok(())
}
