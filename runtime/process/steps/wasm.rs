//! The `wasm` step: runs a guest module on each document; the guest's
//! output documents go on to the next step.
//!
//! ```yaml
//! - wasm: transform.wat          # a module file in the bundle (.wasm or .wat)
//! ```
//!
//! The guest reads the document on stdin (the stored payload is streamed),
//! gets the tracked properties, runtime names, process settings and the
//! document's dynamic properties as environment variables, and writes its
//! log to stderr. A trap, a non-zero exit or a limit is permanent: the
//! same guest does the same on the same document.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;

use super::{Content, Document, LoadContext, ProcessStep, StepContext, StepFailure};
use crate::engine::{GuestDocument, GuestFailure, GuestInput, PreparedModule};
use crate::process::execution::TRACKED;

/// A configured `wasm` step.
pub struct WasmStep {
    /// The module file, relative to the bundle.
    file: String,
    /// SHA-256 of the module file, for the bundle's version.
    sha256: [u8; 32],
    module: Arc<dyn PreparedModule>,
}

/// Reads and compiles the module `file` names in the bundle.
pub fn load(file: String, cx: &LoadContext<'_>) -> Result<WasmStep, (String, String)> {
    let key = cx.key("wasm");
    let path = inside_bundle(cx.bundle_dir, &file).map_err(|r| (key.clone(), r))?;
    let bytes =
        std::fs::read(&path).map_err(|e| (key.clone(), format!("{}: {e}", path.display())))?;
    let module = cx
        .engine
        .prepare(&bytes)
        .map_err(|r| (key, format!("{file}: {r}")))?;
    let sha256 = sha2::Sha256::digest(&bytes).into();
    Ok(WasmStep {
        file,
        sha256,
        module,
    })
}

impl ProcessStep for WasmStep {
    fn describe(&self) -> String {
        format!("wasm {}", self.file)
    }

    fn version(&self) -> Option<&[u8]> {
        Some(&self.sha256)
    }

    /// A guest has no effect outside: it only produces documents.
    fn has_effects(&self) -> bool {
        false
    }

    fn run(
        &self,
        document: Document,
        cx: &mut StepContext<'_>,
    ) -> Result<Vec<Document>, StepFailure> {
        let where_ = cx.where_;
        let env = environment(cx, &document);
        let input = match &document.content {
            Content::Memory(bytes) => GuestDocument::Bytes(bytes),
            Content::Stored { reference, .. } => GuestDocument::Stream(
                cx.documents
                    .reader(reference)
                    .map_err(|e| StepFailure::payload(&e))?,
            ),
        };
        let run = self.module.run(GuestInput {
            document: input,
            env: &env,
            properties: &document.properties,
            limits: cx.limits,
        });
        *cx.engine += run.total;
        *cx.instantiate += run.instantiate;
        for line in String::from_utf8_lossy(&run.stderr).lines() {
            if is_warning(line) {
                *cx.warned = true;
            }
            cx.log.line("GUEST", format_args!("{line}"));
        }
        if cx.debug {
            cx.log.line(
                "DEBUG",
                format_args!(
                    "{where_}: instantiate {} µs, total {} µs",
                    run.instantiate.as_micros(),
                    run.total.as_micros()
                ),
            );
        }
        let produced = run.outcome.map_err(|e| match e {
            // Name the process: the limit is its own setting.
            GuestFailure::OutputLimit(_) => StepFailure::permanent(format!(
                "{where_}: {e} in process {}; none of it is delivered or kept",
                cx.job.spec.id
            )),
            e => StepFailure::guest(where_, &e),
        })?;
        Ok(produced
            .into_iter()
            .map(|d| Document {
                content: Content::Memory(d.bytes),
                properties: d.properties,
                delivered: Vec::new(),
            })
            .collect())
    }
}

/// A guest log line whose first word is `warn` or `warning` (any case,
/// colon optional) marks the execution COMPLETE_WARN.
pub fn is_warning(line: &str) -> bool {
    let first = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(':')
        .to_ascii_lowercase();
    first == "warn" || first == "warning"
}

/// The guest's environment: tracked properties, runtime names, the
/// process settings, and the dynamic properties as `DDP_<name>`.
fn environment(cx: &StepContext<'_>, document: &Document) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = TRACKED
        .iter()
        .filter_map(|(key, var)| cx.tracked.get(*key).map(|v| (var.to_string(), v.clone())))
        .collect();
    env.push(("ATOM_PROCESS".into(), cx.job.spec.id.clone()));
    env.push(("ATOM_PROCESS_VERSION".into(), cx.job.spec.version.clone()));
    env.push(("ATOM_EXECUTION_ID".into(), cx.record.id.clone()));
    env.extend(cx.job.spec.process.settings.iter().cloned());
    env.extend(
        document
            .properties
            .iter()
            .map(|(k, v)| (format!("DDP_{k}"), v.clone())),
    );
    env
}

/// A module path must name a regular file inside the bundle, reached
/// through no symbolic link. Checked with `lstat` before anything is
/// read, so a link to a file elsewhere is never opened (and its content
/// cannot appear in an error).
fn inside_bundle(bundle_dir: &Path, file: &str) -> Result<PathBuf, String> {
    let relative = Path::new(file);
    if file.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{file:?} must be a relative path inside the bundle (no '..', not absolute)"
        ));
    }
    let lower = file.to_ascii_lowercase();
    if !(lower.ends_with(".wasm") || lower.ends_with(".wat")) {
        return Err(format!("{file:?} is not a .wasm or .wat module"));
    }
    let mut path = bundle_dir.to_path_buf();
    for component in relative.components() {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("{file:?}: {}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{file:?}: {} is a symbolic link; modules must be regular files inside the bundle (the link was not followed)",
                path.display()
            ));
        }
    }
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(format!("{file:?} is not a regular file"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_regular_files_inside_the_bundle_never_read_through_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        std::fs::write(dir.path().join("secret.wat"), "TOP SECRET").expect("write");
        std::fs::write(bundle.join("guest.wat"), "(module)").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.wat"), bundle.join("link.wat"))
            .expect("symlink");
        assert_eq!(
            inside_bundle(&bundle, "guest.wat").expect("file"),
            bundle.join("guest.wat")
        );
        let err = inside_bundle(&bundle, "link.wat").expect_err("link");
        assert!(
            err.contains("is a symbolic link") && !err.contains("SECRET"),
            "{err}"
        );
        for bad in ["../secret.wat", "/etc/x.wat", "sub/../guest.wat"] {
            let err = inside_bundle(&bundle, bad).expect_err("refused");
            assert!(err.contains("inside the bundle"), "{bad}: {err}");
        }
    }
}
