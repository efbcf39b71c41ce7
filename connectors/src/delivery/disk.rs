//! The disk connector: writes a document into a directory under a file
//! name made from a template over its properties, atomically (temporary
//! file, fsync, rename, fsync of the directory), and never outside the
//! directory: property values cannot carry path separators or `..`, the
//! rendered path is checked component by component, and no directory
//! between the target's root (the Atom's data directory or an allowed
//! directory) and the file may be a symbolic link: each is checked with
//! `lstat` right before the write, so a link put there after deploy is
//! refused too.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::template::{Template, TemplateError};
use super::Content;

/// What to do when the target file exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Replace it (atomically). Reruns of an execution rewrite the same file.
    Overwrite,
    /// Keep it and write `name-1`, `name-2`, ...
    Unique,
    /// Fail the step.
    Error,
}

/// A configured disk step.
#[derive(Debug, Clone)]
pub struct DiskTarget {
    /// The root the directory was allowed under (data_dir or one of
    /// `delivery.allowed_directories`); nothing below it may be a link.
    pub root: PathBuf,
    /// Inside `root` (or `root` itself).
    pub directory: PathBuf,
    pub file_name: Template,
    pub if_exists: IfExists,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("file name template {template:?}: {source}")]
    Template {
        template: String,
        source: TemplateError,
    },
    #[error("file name {0:?} is not a safe relative path inside the directory")]
    Unsafe(String),
    #[error("{path}: resolves outside the target directory {directory}")]
    Escapes { path: PathBuf, directory: PathBuf },
    #[error("{0}: is a symbolic link; disk steps never write through symbolic links")]
    Symlink(PathBuf),
    #[error("{0}: exists and is not a directory")]
    NotDirectory(PathBuf),
    #[error("{0}: already exists")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DiskError {
    /// True when running the step again later may succeed: the disk is
    /// full, a quota is reached, the device failed an I/O, or the file
    /// system is read-only (remounted after an error, or under
    /// maintenance). A bad file name, an escape or an existing file will
    /// fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            DiskError::Io { source, .. } => is_transient_io(source),
            DiskError::Template { .. }
            | DiskError::Unsafe(_)
            | DiskError::Escapes { .. }
            | DiskError::Symlink(_)
            | DiskError::NotDirectory(_)
            | DiskError::Exists(_) => false,
        }
    }
}

/// ENOSPC, EDQUOT, EIO and EROFS.
pub fn is_transient_io(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    /// EIO on Linux and the BSDs; it has no `ErrorKind` of its own.
    const EIO: i32 = 5;
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem
    ) || error.raw_os_error() == Some(EIO)
}

/// Makes a property value safe as (part of) one path component.
pub fn escape_value(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    // "", "." and ".." would name the directory itself or its parent, and
    // a leading dot would hide the file.
    let visible = replaced.trim_start_matches('.');
    let hidden = replaced.len() - visible.len();
    let escaped = "_".repeat(hidden) + visible;
    if escaped.is_empty() {
        "_".into()
    } else {
        escaped
    }
}

/// Checks a template at deploy time: its literal text must not climb out.
pub fn check_template(template: &Template) -> Result<(), String> {
    if template.source().starts_with(['/', '\\']) {
        return Err("file_name must be relative to the directory".into());
    }
    if template
        .literal_text()
        .any(|text| text.split(['/', '\\']).any(|c| c == ".."))
    {
        return Err("file_name must not contain '..'".into());
    }
    Ok(())
}

impl DiskTarget {
    /// The relative path for a document with these properties.
    pub fn relative_path<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<PathBuf, DiskError> {
        let rendered = self
            .file_name
            .render(lookup, escape_value)
            .map_err(|source| DiskError::Template {
                template: self.file_name.source().to_string(),
                source,
            })?;
        let relative = PathBuf::from(&rendered);
        let safe = !rendered.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && !rendered.ends_with('/');
        if !safe {
            return Err(DiskError::Unsafe(rendered));
        }
        Ok(relative)
    }

    /// Writes one document; returns where it went.
    pub fn write<'a>(
        &self,
        content: Content<'_>,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<PathBuf, DiskError> {
        let relative = self.relative_path(lookup)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DiskError::Io { path, source }
        };
        // Every directory from the root down to the file's folder, checked
        // (and created) one by one without following a link.
        let parent_relative = relative.parent().unwrap_or(Path::new(""));
        let below_root = self
            .directory
            .strip_prefix(&self.root)
            .map_err(|_| DiskError::Escapes {
                path: self.directory.clone(),
                directory: self.root.clone(),
            })?
            .join(parent_relative);
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let mut walked = self.root.clone();
        for component in below_root.components() {
            walked.push(component);
            self.real_directory(&walked)?;
        }
        let base = self.directory.canonicalize().map_err(io(&self.directory))?;
        let mut target = base.join(&relative);
        let parent = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| base.clone());
        let real_parent = parent.canonicalize().map_err(io(&parent))?;
        if !real_parent.starts_with(&base) {
            return Err(DiskError::Escapes {
                path: target,
                directory: base,
            });
        }
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if meta.file_type().is_symlink() || meta.is_dir() {
                return Err(DiskError::Escapes {
                    path: target,
                    directory: base,
                });
            }
            match self.if_exists {
                IfExists::Overwrite => {}
                IfExists::Error => return Err(DiskError::Exists(target)),
                IfExists::Unique => target = unique_name(&target),
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = real_parent.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            match content {
                Content::Bytes(bytes) => file.write_all(bytes)?,
                Content::Stream { open, len } => {
                    let copied = std::io::copy(&mut open()?, &mut file)?;
                    if copied != len {
                        return Err(std::io::Error::other(format!(
                            "the stored document has {copied} bytes, {len} expected"
                        )));
                    }
                }
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            std::fs::File::open(&real_parent)?.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(DiskError::Io {
                path: target,
                source,
            });
        }
        Ok(target)
    }
}

impl DiskTarget {
    /// `path` is a directory and not a symbolic link; created when missing.
    fn real_directory(&self, path: &Path) -> Result<(), DiskError> {
        let meta = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(path) {
                    Ok(()) => return Ok(()),
                    // Made meanwhile by another execution: check what it is.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(DiskError::Io {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
                std::fs::symlink_metadata(path).map_err(|source| DiskError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            Err(source) => {
                return Err(DiskError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Ok(meta) => meta,
        };
        if meta.file_type().is_symlink() {
            // Say "outside" when it is; any link is refused either way.
            // Where the directory really is, were none of it a link.
            let real_root = self.root.canonicalize().unwrap_or(self.root.clone());
            let expected = match self.directory.strip_prefix(&self.root) {
                Ok(below) => real_root.join(below),
                Err(_) => real_root,
            };
            let inside = path
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&expected));
            return Err(if inside {
                DiskError::Symlink(path.to_path_buf())
            } else {
                DiskError::Escapes {
                    path: path.to_path_buf(),
                    directory: self.directory.clone(),
                }
            });
        }
        if !meta.is_dir() {
            return Err(DiskError::NotDirectory(path.to_path_buf()));
        }
        Ok(())
    }
}

fn unique_name(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1u64..)
        .map(|n| path.with_file_name(format!("{stem}-{n}{ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &Path, template: &str, if_exists: IfExists) -> DiskTarget {
        DiskTarget {
            root: dir.parent().unwrap_or(dir).to_path_buf(),
            directory: dir.to_path_buf(),
            file_name: Template::parse(template).expect("template"),
            if_exists,
        }
    }

    #[test]
    fn writes_inside_and_escapes_hostile_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let t = target(&out, "{from}/{name}", IfExists::Overwrite);
        for hostile in ["../../etc/passwd", "..", "/etc/passwd", "a\\..\\b", ".", ""] {
            let path = t
                .write(Content::Bytes(b"doc"), |n| match n {
                    "from" => Some(hostile),
                    _ => Some("x"),
                })
                .expect("written");
            assert!(
                path.starts_with(out.canonicalize().expect("canon")),
                "{hostile:?} -> {path:?}"
            );
            assert_eq!(std::fs::read(&path).expect("read"), b"doc");
        }
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn refuses_symlinks_out_and_literal_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&out).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, out.join("link")).expect("symlink");
        let t = target(&out, "link/{name}", IfExists::Overwrite);
        let err = t
            .write(Content::Bytes(b"doc"), |_| Some("f"))
            .expect_err("escapes");
        assert!(matches!(err, DiskError::Escapes { .. }), "{err}");
        assert!(std::fs::read_dir(&outside).expect("ls").next().is_none());
        assert!(check_template(&Template::parse("../{name}").expect("t")).is_err());
        assert!(check_template(&Template::parse("/abs/{name}").expect("t")).is_err());
        assert!(check_template(&Template::parse("a/{name}").expect("t")).is_ok());
    }

    #[test]
    fn refuses_a_directory_replaced_by_a_link_after_deploy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("out")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        // data/out/orders is a link to a folder outside data/.
        std::os::unix::fs::symlink(&outside, root.join("out/orders")).expect("symlink");
        let t = DiskTarget {
            root: root.clone(),
            directory: root.join("out/orders"),
            file_name: Template::parse("{name}").expect("template"),
            if_exists: IfExists::Overwrite,
        };
        let err = t
            .write(Content::Bytes(b"doc"), |_| Some("f"))
            .expect_err("refused");
        assert!(matches!(err, DiskError::Escapes { .. }), "{err}");
        assert!(err.to_string().contains("out/orders"), "{err}");
        assert!(std::fs::read_dir(&outside).expect("ls").next().is_none());
        // A link that stays inside is refused too (it could be re-pointed).
        std::fs::remove_file(root.join("out/orders")).expect("rm");
        std::fs::create_dir_all(root.join("out/real")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("out/real"), root.join("out/orders"))
            .expect("symlink");
        let t = DiskTarget {
            directory: root.join("out"),
            file_name: Template::parse("orders/{name}").expect("template"),
            ..t
        };
        let err = t
            .write(Content::Bytes(b"doc"), |_| Some("f"))
            .expect_err("refused");
        assert!(matches!(err, DiskError::Symlink(_)), "{err}");
        assert!(std::fs::read_dir(root.join("out/real"))
            .expect("ls")
            .next()
            .is_none());
    }

    proptest::proptest! {
        /// Whatever a sender or a guest puts into a property, the rendered
        /// path is relative and has only normal components.
        #[test]
        fn any_property_value_stays_inside(a in ".*", b in "[./\\\\a-z]{0,12}") {
            let t = target(Path::new("/out"), "{a}/x-{b}", IfExists::Overwrite);
            let path = t
                .relative_path(|n| if n == "a" { Some(a.as_str()) } else { Some(b.as_str()) })
                .expect("renders");
            proptest::prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
            proptest::prop_assert_eq!(path.components().count(), 2);
        }
    }

    #[test]
    fn full_disks_and_io_errors_are_transient_bad_names_are_not() {
        let io = |code: i32| DiskError::Io {
            path: PathBuf::from("/out/f"),
            source: std::io::Error::from_raw_os_error(code),
        };
        // ENOSPC, EDQUOT, EIO, EROFS (Linux numbers).
        for code in [28, 122, 5, 30] {
            assert!(io(code).is_transient(), "errno {code}");
        }
        // EACCES, ENOENT, EISDIR: the set-up is wrong; retrying will not help.
        for code in [13, 2, 21] {
            assert!(!io(code).is_transient(), "errno {code}");
        }
        assert!(!DiskError::Unsafe("..".into()).is_transient());
        assert!(!DiskError::Exists(PathBuf::from("/out/f")).is_transient());
        assert!(!DiskError::Escapes {
            path: PathBuf::from("/out/l"),
            directory: PathBuf::from("/out"),
        }
        .is_transient());
        let missing = DiskError::Template {
            template: "{x}".into(),
            source: TemplateError::Missing("x".into()),
        };
        assert!(!missing.is_transient());
    }

    #[test]
    fn if_exists_policies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unique = target(dir.path(), "{n}.txt", IfExists::Unique);
        let a = unique
            .write(Content::Bytes(b"1"), |_| Some("f"))
            .expect("first");
        let b = unique
            .write(Content::Bytes(b"2"), |_| Some("f"))
            .expect("second");
        assert_ne!(a, b);
        assert!(b.ends_with("f-1.txt"));
        let strict = target(dir.path(), "{n}.txt", IfExists::Error);
        assert!(matches!(
            strict.write(Content::Bytes(b"3"), |_| Some("f")),
            Err(DiskError::Exists(_))
        ));
        let over = target(dir.path(), "{n}.txt", IfExists::Overwrite);
        let c = over
            .write(Content::Bytes(b"4"), |_| Some("f"))
            .expect("overwrite");
        assert_eq!(std::fs::read(c).expect("read"), b"4");
    }
}
