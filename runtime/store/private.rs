//! Business documents are private: the data directory is 0700 and every
//! file Atom writes is 0600 (documents, the database, the admin token,
//! delivered outputs, console users and audit log), so other local users
//! read none of them.
//!
//! Done once at start: a process umask of 077 covers every file and folder
//! created from then on; what an earlier version or an operator left with
//! wider modes in the data directory is narrowed, with a warning.

use std::path::Path;

/// Files at the top of the data directory that must be owner-only.
const PRIVATE_FILES: [&str; 6] = [
    "atom.db",
    "atom.db-wal",
    "atom.db-shm",
    "admin.token",
    crate::console::users::USERS_FILE,
    crate::console::audit::AUDIT_FILE,
];

/// Sets the umask and narrows the data directory and its known files.
pub fn secure(data_dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets the process's file mode mask.
        unsafe { libc::umask(0o077) };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("creating data directory {}: {e}", data_dir.display()))?;
        narrow(data_dir, 0o700)?;
        for name in PRIVATE_FILES {
            let path = data_dir.join(name);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => narrow(&path, 0o600)?,
                _ => {}
            }
        }
        for dir in ["keys", "messages", "executions", "spool", "out"] {
            let path = data_dir.join(dir);
            if path.is_dir() {
                narrow(&path, 0o700)?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link; the data directory's own files must be real files",
            path.display()
        ));
    }
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        tracing::warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"),
            "narrowing permissions: business documents and credentials are owner-only");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            format!(
                "{} has mode {current:o} and cannot be made {mode:o}: {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}
