//! Payload files: the raw request and the unwrapped payload of each
//! message, in `<data>/messages/<yyyy-mm-dd>/<uuid>/`.
//!
//! Files are written here without syncing; [`super::group_commit`] makes a
//! whole batch durable with one `syncfs` before the batch's rows are
//! committed, and only then do the batch's MDNs leave. A file whose row is
//! committed is therefore whole after a crash; files of a message that was
//! never committed (and never acknowledged) may be partial and are ignored.

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

/// Writes `parts` (name, chunks) into a new directory `dir`; not yet durable.
pub fn write(dir: &Path, parts: &[(&str, &[&[u8]])]) -> Result<Vec<PathBuf>> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::new(what, format!("{}: {e}", path.display()))
    };
    fs::create_dir_all(dir).map_err(|e| fail("creating message directory", dir, e))?;
    let mut written = Vec::with_capacity(parts.len());
    for (name, chunks) in parts {
        let path = dir.join(name);
        let mut file = fs::File::create(&path).map_err(|e| fail("creating file", &path, e))?;
        for chunk in *chunks {
            file.write_all(chunk)
                .map_err(|e| fail("writing file", &path, e))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// Makes everything written so far on the data directory's filesystem
/// durable: file contents and directory entries alike.
pub fn sync_filesystem(data_dir: &Path) -> Result<()> {
    let dir = fs::File::open(data_dir).map_err(|e| {
        StoreError::new(
            "opening data directory",
            format!("{}: {e}", data_dir.display()),
        )
    })?;
    sync_fs_of(&dir).map_err(|e| {
        StoreError::new(
            "syncing the data filesystem",
            format!("{}: {e}", data_dir.display()),
        )
    })
}

#[cfg(target_os = "linux")]
fn sync_fs_of(file: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    // Since Linux 5.8 it reports writeback errors, like fsync.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_fs_of(_file: &fs::File) -> std::io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}
