//! Puts a new version of a bundle folder in place in one step, so that the
//! hot-reload watcher never sees half a bundle or none: used by
//! `atom deploy` and by the Molecule's bundle sync.

use std::path::Path;

/// Puts `staging` at `target`: an atomic exchange when a previous version
/// is there (Linux renameat2), a rename when not; the previous version is
/// then removed.
pub fn swap_into_place(staging: &Path, target: &Path) -> std::io::Result<()> {
    if !target.exists() {
        return std::fs::rename(staging, target);
    }
    exchange(staging, target)?;
    // `staging` now holds the previous version.
    std::fs::remove_dir_all(staging)
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    // Two renames: the watcher's debounce covers the short gap.
    let parked = b.with_extension("previous");
    std::fs::rename(b, &parked)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&parked, a)
}
