//! Bundles shared by the nodes of a Molecule: the store holds each
//! bundle's files and the version every node serves (its head); each
//! node's processes folder is a copy of that. Every second a node
//!
//! - publishes a bundle whose folder changed here (dropped into
//!   `processes/` or `atom deploy`) once this node has loaded it without
//!   error, and withdraws one whose folder was removed here;
//! - writes a head that changed elsewhere into its folder (atomically, see
//!   [`super::swap`]) and reloads it, or removes a withdrawn one.
//!
//! "Changed here" and "changed elsewhere" are told apart by the version
//! this node last agreed with the store. At start the store wins: its heads
//! replace the local copies, and local bundles it does not know are
//! published. Executions under way keep the version they started with.
//! Runs only with a shared store; on one node the folder is the truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::sha::Sha256;

use super::bundle::PROCESS_FILE;
use super::Registry;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How often the heads and the local folders are compared.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

pub struct BundleSync {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    processes_dir: PathBuf,
    node: String,
    /// Per bundle, the content hash this node last agreed with the store
    /// (published or written here).
    agreed: Mutex<HashMap<String, String>>,
}

/// A bundle's files: (path relative to its folder, bytes), sorted.
pub type Files = Vec<(String, Vec<u8>)>;

impl BundleSync {
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        processes_dir: PathBuf,
        node: &str,
    ) -> BundleSync {
        BundleSync {
            registry,
            store,
            processes_dir,
            node: node.to_string(),
            agreed: Mutex::default(),
        }
    }

    fn agreed(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.agreed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start, before the registry loads: the store's heads are written
    /// into the processes folder (replacing local copies that differ) and
    /// withdrawn ones removed.
    pub fn adopt_heads(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.processes_dir)
            .map_err(|e| format!("{}: {e}", self.processes_dir.display()))?;
        for head in self.store.bundle_heads().map_err(|e| e.to_string())? {
            let dir = self.processes_dir.join(&head.name);
            if head.withdrawn {
                if dir.exists() {
                    tracing::warn!(bundle = %head.name, "bundle withdrawn in the Molecule; local copy removed");
                    remove_bundle(&self.processes_dir, &head.name)
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                continue;
            }
            let local = read_bundle(&dir).ok().map(|f| content_hash(&f));
            if local.as_deref() != Some(head.hash.as_str()) {
                if local.is_some() {
                    tracing::warn!(bundle = %head.name, version = %head.hash,
                        "local copy differs from the Molecule's version; replaced");
                }
                self.write_head(&head.name, &head.hash)?;
            }
            self.agreed().insert(head.name, head.hash);
        }
        Ok(())
    }

    /// One round: publish what changed here, apply what changed elsewhere.
    /// Per bundle, with L its version here, H the store's head and A the
    /// version this node last agreed on (each absent when none):
    /// L = H: agreed. L != A and H = A: changed here, published (or
    /// withdrawn). L = A and H != A: changed elsewhere, written here (or
    /// removed). Both moved: the store wins.
    pub fn sync(&self) -> Result<(), String> {
        let heads: HashMap<String, Option<String>> = self
            .store
            .bundle_heads()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|h| (h.name, (!h.withdrawn).then_some(h.hash)))
            .collect();
        let local = self.local_bundles();
        let mut names: Vec<String> = heads.keys().chain(local.keys()).cloned().collect();
        names.sort();
        names.dedup();
        for name in names {
            let files = local.get(&name);
            let here = files.map(|f| content_hash(f));
            let head = heads.get(&name).cloned().flatten();
            let agreed = self.agreed().get(&name).cloned();
            if here == head {
                self.agree(&name, head);
                continue;
            }
            if here != agreed && head == agreed {
                match (files, &here) {
                    (Some(files), Some(hash)) => {
                        if !self.registry.loads_cleanly(&name) {
                            continue; // Published once it loads; `atom processes` shows why not.
                        }
                        self.store
                            .publish_bundle(&name, hash, files, &self.node)
                            .map_err(|e| e.to_string())?;
                        tracing::info!(bundle = %name, version = %hash, "bundle published to the Molecule");
                    }
                    _ => {
                        self.store
                            .withdraw_bundle(&name, &self.node)
                            .map_err(|e| e.to_string())?;
                        tracing::info!(bundle = %name, "bundle withdrawn from the Molecule");
                    }
                }
                self.agree(&name, here);
                continue;
            }
            if here != agreed {
                tracing::warn!(bundle = %name, "bundle changed here and elsewhere at once; the Molecule's version wins");
            }
            match &head {
                Some(hash) => {
                    self.write_head(&name, hash)?;
                    tracing::info!(bundle = %name, version = %hash, "bundle deployed on another node; serving it here");
                }
                None => {
                    remove_bundle(&self.processes_dir, &name)
                        .map_err(|e| format!("removing bundle {name}: {e}"))?;
                    tracing::info!(bundle = %name, "bundle withdrawn on another node; removed here");
                }
            }
            self.registry.reload(&name);
            self.agree(&name, head);
        }
        Ok(())
    }

    fn agree(&self, name: &str, version: Option<String>) {
        match version {
            Some(hash) => self.agreed().insert(name.to_string(), hash),
            None => self.agreed().remove(name),
        };
    }

    /// Writes the head's files into the processes folder in one step.
    fn write_head(&self, name: &str, hash: &str) -> Result<(), String> {
        let files = self
            .store
            .bundle_files(name, hash)
            .map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err(format!(
                "bundle {name} version {hash} has no files in the store"
            ));
        }
        let staging = self
            .processes_dir
            .join(format!(".sync-{name}-{}", uuid::Uuid::new_v4().simple()));
        let written = (|| -> std::io::Result<()> {
            for (path, content) in &files {
                let target = safe_join(&staging, path).ok_or_else(|| {
                    std::io::Error::other(format!("unsafe path {path:?} in the stored bundle"))
                })?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&target, content)?;
            }
            super::swap::swap_into_place(&staging, &self.processes_dir.join(name))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!("writing bundle {name}: {e}"));
        }
        Ok(())
    }

    /// The bundle folders here (a `process.yaml` inside, not hidden).
    fn local_bundles(&self) -> HashMap<String, Files> {
        let mut found = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.processes_dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with('.') || !path.join(PROCESS_FILE).is_file() {
                continue;
            }
            if let Ok(files) = read_bundle(&path) {
                found.insert(name, files);
            }
        }
        found
    }
}

/// Syncs every second until shutdown.
pub fn start(sync: Arc<BundleSync>, shutdown: Shutdown) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("atom-bundle-sync".into())
        .spawn(move || {
            let mut failing = false;
            while !shutdown.is_triggered() {
                std::thread::sleep(SYNC_INTERVAL);
                match sync.sync() {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "bundle sync failed; retrying");
                    }
                    Err(_) => {}
                }
            }
        })?;
    Ok(())
}

/// A bundle folder's regular files, recursively, sorted by path; hidden
/// names skipped; a symbolic link is an error (bundles stay in their lane).
pub fn read_bundle(dir: &Path) -> std::io::Result<Files> {
    fn walk(root: &Path, dir: &Path, out: &mut Files) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                return Err(std::io::Error::other(format!(
                    "{}: symbolic links are not allowed in a bundle",
                    path.display()
                )));
            } else if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .to_string_lossy()
                    .to_string();
                out.push((relative, std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// SHA-256 over each file's path and content, lengths included so that
/// no two different bundles hash alike.
pub fn content_hash(files: &[(String, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update(&(path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update(&(content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hasher.finish().iter().map(|b| format!("{b:02x}")).collect()
}

/// `root/relative` when `relative` stays inside `root` (no absolute path,
/// no `..`).
fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let path = Path::new(relative);
    path.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| root.join(path))
}

fn remove_bundle(processes_dir: &Path, name: &str) -> std::io::Result<()> {
    // Renamed away first, so the watcher sees it gone in one step.
    let parked = processes_dir.join(format!(".removed-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::rename(processes_dir.join(name), &parked)?;
    std::fs::remove_dir_all(parked)
}
