//! Documents as files on the local filesystem (one node): the raw request
//! and the unwrapped payload of each message in
//! `<data>/messages/<yyyy-mm-dd>/<uuid>/`, an execution's kept documents in
//! `<data>/executions/<id>/`. References are the paths.
//!
//! Files are written without syncing; [`super::group_commit`] makes a whole
//! batch durable with one `syncfs` before the batch's rows are committed,
//! and only then do the batch's MDNs leave.

use std::fs;
use std::path::{Path, PathBuf};

use super::documents::{Documents, Part, Piece, Staged};
use super::{Result, StoreError};

/// Documents under a data directory.
pub struct FileDocuments {
    data_dir: PathBuf,
}

impl FileDocuments {
    pub fn new(data_dir: &Path) -> FileDocuments {
        FileDocuments {
            data_dir: data_dir.to_path_buf(),
        }
    }
}

impl Documents for FileDocuments {
    fn stage(&self, parts: &[Part<'_>]) -> Result<Staged> {
        let dir = message_dir(&self.data_dir);
        let written = write(&dir, parts)?;
        Ok(Staged {
            references: written.iter().map(|p| p.display().to_string()).collect(),
            group: dir.display().to_string(),
        })
    }

    fn discard(&self, staged: &Staged) {
        remove(Path::new(&staged.group));
    }

    fn keep(&self, execution_id: &str, index: usize, bytes: &[u8]) -> Result<String> {
        let dir = execution_dir(&self.data_dir, execution_id);
        let name = format!("document-{}", index + 1);
        let written = write(&dir, &[Part::new(&name, vec![Piece::Bytes(bytes)])])?;
        Ok(written
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default())
    }

    fn keep_stored(&self, execution_id: &str, index: usize, reference: &str) -> Result<String> {
        let dir = execution_dir(&self.data_dir, execution_id);
        let path = dir.join(format!("document-{}", index + 1));
        let fail = |e: std::io::Error| {
            StoreError::io(
                "keeping a document",
                &e,
                format!("{reference} -> {}: {e}", path.display()),
            )
        };
        fs::create_dir_all(&dir).map_err(fail)?;
        // copy_file_range underneath: the kernel copies, not our memory.
        fs::copy(reference, &path).map_err(fail)?;
        Ok(path.display().to_string())
    }

    fn make_durable(&self) -> Result<()> {
        sync_filesystem(&self.data_dir)
    }

    fn length(&self, reference: &str) -> Result<u64> {
        fs::metadata(reference)
            .map(|m| m.len())
            .map_err(|e| StoreError::io("reading document", &e, format!("{reference}: {e}")))
    }

    fn read(&self, reference: &str) -> Result<Vec<u8>> {
        fs::read(reference)
            .map_err(|e| StoreError::io("reading document", &e, format!("{reference}: {e}")))
    }

    fn reader(&self, reference: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let file = fs::File::open(reference)
            .map_err(|e| StoreError::io("reading document", &e, format!("{reference}: {e}")))?;
        Ok(Box::new(file))
    }

    fn exists(&self, reference: &str) -> bool {
        Path::new(reference).is_file()
    }

    fn ends_with(&self, reference: &str, tail: &[u8]) -> Option<bool> {
        ends_with(Path::new(reference), tail)
    }

    /// One node: the files of a message that was not stored are removed
    /// when its commit fails; only a crash between writing them and the
    /// commit leaves a folder behind (never referenced, never read; see
    /// README "Durability"). Telling those folders from committed ones
    /// would need the store's rows, which this side does not see.
    fn sweep_unreferenced(&self, _older_than: std::time::Duration) -> Result<usize> {
        Ok(0)
    }

    fn remove(&self, references: &[String]) -> usize {
        let mut removed = 0;
        for path in references {
            let path = Path::new(path);
            match fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "retention: cannot remove file")
                }
            }
            // The message or execution folder goes once empty.
            if let Some(dir) = path.parent() {
                let _ = fs::remove_dir(dir);
            }
        }
        removed
    }
}

/// Where an execution keeps its documents: `<data>/executions/<id>/`.
pub fn execution_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("executions").join(id)
}

/// Where one message's files go: `<data>/messages/<yyyy-mm-dd>/<uuid>/`.
pub fn message_dir(data_dir: &Path) -> PathBuf {
    let today = time::OffsetDateTime::now_utc().date();
    data_dir
        .join("messages")
        .join(today.to_string())
        .join(uuid::Uuid::new_v4().simple().to_string())
}

/// Writes `parts` into the directory `dir`; not yet durable.
pub fn write(dir: &Path, parts: &[Part<'_>]) -> Result<Vec<PathBuf>> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::io(what, &e, format!("{}: {e}", path.display()))
    };
    fs::create_dir_all(dir).map_err(|e| fail("creating message directory", dir, e))?;
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        let path = dir.join(part.name);
        if let [Piece::File(whole)] = part.pieces.as_slice() {
            if link_anonymous(whole, &path).is_ok() {
                written.push(path);
                continue;
            }
        }
        let mut file = fs::File::create(&path).map_err(|e| fail("creating file", &path, e))?;
        part.write_to(&mut file)
            .map_err(|e| fail("writing file", &path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// Gives an anonymous file (`O_TMPFILE`, as the spool and payload files
/// are made) a name, instead of copying it: a 1 GiB request or payload is
/// written once. Fails (and the caller copies) for a file that had a name
/// and lost it, or one on another filesystem.
fn link_anonymous(file: &fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are valid NUL-terminated paths; linkat reads them only.
    let done = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the files of a message that was not stored (a duplicate, or a
/// failed commit); they were never acknowledged.
fn remove(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the files of an unstored message");
        }
    }
}

/// Whether the file at `path` ends with `tail` (a stored raw request is
/// its headers, then the body): `None` when the file cannot be read.
fn ends_with(path: &Path, tail: &[u8]) -> Option<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    let tail_length = tail.len() as u64;
    if length < tail_length {
        return Some(false);
    }
    file.seek(SeekFrom::Start(length - tail_length)).ok()?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut rest = tail;
    while !rest.is_empty() {
        let want = rest.len().min(buffer.len());
        file.read_exact(&mut buffer[..want]).ok()?;
        if buffer[..want] != rest[..want] {
            return Some(false);
        }
        rest = &rest[want..];
    }
    Some(true)
}

/// Makes everything written so far on the data directory's filesystem
/// durable: file contents and directory entries alike.
pub fn sync_filesystem(data_dir: &Path) -> Result<()> {
    let dir = fs::File::open(data_dir).map_err(|e| {
        StoreError::io(
            "opening data directory",
            &e,
            format!("{}: {e}", data_dir.display()),
        )
    })?;
    sync_fs_of(&dir).map_err(|e| {
        StoreError::io(
            "syncing the data filesystem",
            &e,
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
