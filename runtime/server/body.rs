//! Reading a request body under a size limit. Small bodies stay in memory;
//! large ones are streamed to an anonymous file in the spool folder and
//! memory-mapped, so a 100 MiB upload is not held twice on the heap.

use std::io::Write;
use std::path::Path;

use actix_web::web;
use futures_util::StreamExt;

/// Bodies up to this size stay in memory.
pub const MEMORY_LIMIT: usize = 8 << 20;

/// A received body.
pub enum Body {
    Memory(Vec<u8>),
    Spooled(memmap2::Mmap),
}

impl Body {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::Memory(v) => v,
            Body::Spooled(m) => m,
        }
    }
}

/// Why the body could not be read.
pub enum BodyError {
    TooLarge { limit: u64 },
    Io(String),
    Client(String),
}

pub async fn read(
    mut payload: web::Payload,
    limit: u64,
    spool_dir: &Path,
) -> Result<Body, BodyError> {
    let mut memory: Vec<u8> = Vec::new();
    let mut spool: Option<std::fs::File> = None;
    let mut total: u64 = 0;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Client(format!("reading request body: {e}")))?;
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
                file.write_all(&memory)
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
            file.sync_data()
                .map_err(|e| BodyError::Io(format!("spooling request body: {e}")))?;
            // SAFETY: the file is private to this request (anonymous, unlinked),
            // so nothing else can modify it while mapped.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| BodyError::Io(format!("mapping spooled body: {e}")))?;
            Ok(Body::Spooled(map))
        }
    }
}
