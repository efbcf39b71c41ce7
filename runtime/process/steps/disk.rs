//! The `disk` step: writes each document to a file and hands it on.
//!
//! ```yaml
//! - disk:
//!     directory: out/orders      # inside data_dir, or delivery.allowed_directories
//!     file_name: "{as2_from}/{file_name}"
//!     if_exists: overwrite       # overwrite | unique | error
//! ```
//!
//! A full disk, a quota or an I/O error is transient; a bad file name or
//! an escape from the directory is permanent. The writing itself is
//! [`atom_connectors::delivery::disk`]'s.

use std::path::{Component, Path, PathBuf};

use atom_connectors::delivery::disk::{self, DiskError, DiskTarget, IfExists};
use atom_connectors::delivery::template::Template;
use serde::Deserialize;

use super::{with_delivered, Document, LoadContext, ProcessStep, StepContext, StepFailure};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    directory: PathBuf,
    file_name: String,
    if_exists: Option<String>,
}

/// A configured `disk` step.
pub struct DiskStep {
    target: DiskTarget,
}

/// Checks the file name template and the directory (see `disk_directory`).
pub fn load(raw: RawDisk, cx: &LoadContext<'_>) -> Result<DiskStep, (String, String)> {
    let file_name =
        Template::parse(&raw.file_name).map_err(|e| (cx.key("disk.file_name"), e.to_string()))?;
    disk::check_template(&file_name).map_err(|r| (cx.key("disk.file_name"), r))?;
    let if_exists = match raw.if_exists.as_deref().unwrap_or("overwrite") {
        "overwrite" => IfExists::Overwrite,
        "unique" => IfExists::Unique,
        "error" => IfExists::Error,
        other => {
            return Err((
                cx.key("disk.if_exists"),
                format!("{other:?} is not one of overwrite, unique, error"),
            ))
        }
    };
    let (root, directory) = disk_directory(&raw.directory, cx.data_dir, cx.allowed_directories)
        .map_err(|r| (cx.key("disk.directory"), r))?;
    Ok(DiskStep {
        target: DiskTarget {
            root,
            directory,
            file_name,
            if_exists,
        },
    })
}

impl ProcessStep for DiskStep {
    fn describe(&self) -> String {
        format!(
            "disk {}/{}",
            self.target.directory.display(),
            self.target.file_name
        )
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn run(
        &self,
        mut document: Document,
        cx: &mut StepContext<'_>,
    ) -> Result<Vec<Document>, StepFailure> {
        let where_ = cx.where_;
        let written = match cx.faults.disk_failure() {
            Some(source) => Err(DiskError::Io {
                path: self.target.directory.clone(),
                source,
            }),
            None => {
                let lookup = cx.lookup(&document.properties);
                with_delivered(&document.content, cx.documents, |c| {
                    self.target.write(c, lookup)
                })
            }
        };
        let path = written.map_err(|e| StepFailure::disk(where_, &e))?;
        cx.log
            .line("INFO", format_args!("{where_}: wrote {}", path.display()));
        document.delivered.push(path.display().to_string());
        Ok(vec![document])
    }
}

/// The runtime's own entries in the data directory: a disk step may not
/// write among them (it could overwrite the store, keys or the token).
const RUNTIME_ENTRIES: [&str; 7] = [
    "keys",
    "messages",
    "executions",
    "cache",
    "spool",
    "atom.db",
    "admin.token",
];

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Where a disk step writes: `(root, directory)`. Relative directories are
/// resolved against `data_dir`; the result must lie inside `data_dir` (not
/// among the runtime's own entries) or inside one of `allowed`. No
/// directory below its root may be a symbolic link (checked now, and again
/// by the step before every write).
fn disk_directory(
    raw: &Path,
    data_dir: &Path,
    allowed: &[PathBuf],
) -> Result<(PathBuf, PathBuf), String> {
    if raw.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    let absolute =
        |p: &Path| normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let data_root = absolute(data_dir);
    let resolved = absolute(&data_root.join(raw));
    let roots = || {
        let others: Vec<String> = allowed.iter().map(|r| r.display().to_string()).collect();
        format!(
            "allowed: inside data_dir {}{}",
            data_root.display(),
            if others.is_empty() {
                " (delivery.allowed_directories in atom.yaml lists none)".to_string()
            } else {
                format!(" or delivery.allowed_directories [{}]", others.join(", "))
            }
        )
    };
    let root = if resolved.starts_with(&data_root) && resolved != data_root {
        let first = resolved
            .strip_prefix(&data_root)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        if RUNTIME_ENTRIES
            .iter()
            .any(|entry| first == *entry || first.starts_with(&format!("{entry}-")))
        {
            return Err(format!(
                "{} resolves to {}, among the runtime's own files in data_dir ({}); use a folder such as out/",
                raw.display(),
                resolved.display(),
                RUNTIME_ENTRIES.join(", ")
            ));
        }
        data_root.clone()
    } else if let Some(root) = allowed
        .iter()
        .filter(|root| resolved.starts_with(root))
        .max_by_key(|root| root.components().count())
    {
        root.clone()
    } else {
        return Err(format!(
            "{} resolves to {}, outside the directories disk steps may write to ({})",
            raw.display(),
            resolved.display(),
            roots()
        ));
    };
    // `..` could pass through a link that the lexical result no longer shows.
    if raw.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "{} must not contain '..' (it resolves to {})",
            raw.display(),
            resolved.display()
        ));
    }
    let mut walked = root.clone();
    if let Ok(below) = resolved.strip_prefix(&root) {
        for component in below.components() {
            walked.push(component);
            match std::fs::symlink_metadata(&walked) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!(
                        "{} resolves to {}, but {} is a symbolic link; disk steps never write through symbolic links",
                        raw.display(),
                        resolved.display(),
                        walked.display()
                    ))
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(format!("{} exists and is not a directory", walked.display()))
                }
                Ok(_) => {}
                // Missing: the step creates it (and checks again) at its first write.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(format!("{}: {e}", walked.display())),
            }
        }
    }
    Ok((root, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_directories_stay_inside_data_dir_or_allowed_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(data.join("out")).expect("mkdir");
        std::fs::create_dir_all(&srv).expect("mkdir");
        let allowed = [srv.clone()];
        let (root, resolved) =
            disk_directory(Path::new("out/orders"), &data, &allowed).expect("inside");
        assert_eq!((root, resolved), (data.clone(), data.join("out/orders")));
        let (root, resolved) =
            disk_directory(&srv.join("edi"), &data, &allowed).expect("allowed root");
        assert_eq!((root, resolved), (srv.clone(), srv.join("edi")));
        for (bad, says) in [
            (PathBuf::from("/etc/cron.d"), "outside the directories"),
            (PathBuf::from("../.."), "outside the directories"),
            (PathBuf::from("out/../../x"), "outside the directories"),
            (PathBuf::from("out/../in"), "must not contain '..'"),
            (PathBuf::from("."), "outside the directories"),
            (PathBuf::from("keys"), "runtime's own files"),
            (PathBuf::from("atom.db-wal"), "runtime's own files"),
        ] {
            let err = disk_directory(&bad, &data, &allowed).expect_err("refused");
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let err = disk_directory(Path::new("/etc"), &data, &allowed).expect_err("refused");
        assert!(
            err.contains("/etc resolves to /etc")
                && err.contains(&format!("delivery.allowed_directories [{}]", srv.display())),
            "{err}"
        );
        std::os::unix::fs::symlink(&srv, data.join("out/linked")).expect("symlink");
        let err = disk_directory(Path::new("out/linked/x"), &data, &allowed).expect_err("refused");
        assert!(err.contains("is a symbolic link"), "{err}");
    }
}
