//! Durable payload files: written to a temporary name, fsync'd, renamed,
//! and the directory fsync'd, so that a file that exists after a crash is
//! whole. A positive MDN is sent only after this returns.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// Where one message's files go: `<data>/messages/<yyyy-mm-dd>/<uuid>/`.
pub fn message_dir(data_dir: &Path) -> PathBuf {
    let today = time::OffsetDateTime::now_utc().date();
    data_dir
        .join("messages")
        .join(today.to_string())
        .join(uuid::Uuid::new_v4().simple().to_string())
}

/// Writes `parts` (name, bytes) into `dir` durably.
pub fn write_durably(dir: &Path, parts: &[(&str, &[&[u8]])]) -> Result<Vec<PathBuf>> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::new(what, format!("{}: {e}", path.display()))
    };
    fs::create_dir_all(dir).map_err(|e| fail("creating message directory", dir, e))?;
    let mut written = Vec::with_capacity(parts.len());
    for (name, chunks) in parts {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = fs::File::create(&tmp).map_err(|e| fail("creating file", &tmp, e))?;
        for chunk in *chunks {
            file.write_all(chunk)
                .map_err(|e| fail("writing file", &tmp, e))?;
        }
        file.sync_all().map_err(|e| fail("syncing file", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| fail("renaming file", &path, e))?;
        written.push(path);
    }
    sync_dir(dir)?;
    // The new directory's own entry lives in its parents.
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
        if let Some(grand) = parent.parent() {
            sync_dir(grand)?;
        }
    }
    Ok(written)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::new("syncing directory", format!("{}: {e}", dir.display())))
}
