//! The listener registry: which listener serves a (AS2-To, AS2-From) pair,
//! and in what state.
//!
//! ```text
//!            pause                      resume
//! listening ───────▶ paused ──────────────────▶ listening
//!     ▲                │ restart (stays paused)
//!     │ restart        ▼
//!  errored ◀── bundle invalid / duplicate route
//! ```
//!
//! A paused listener answers 503 with Retry-After, so senders retry and
//! nothing is lost; pause survives a runtime restart (it is in the store).
//! Routes are rebuilt from scratch after every change, in listener-name
//! order: of two bundles claiming one pair, the later name is errored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::bundle::{self, BundleContext, ListenerSpec, PROCESS_FILE};
use crate::engine::ProcessEngine;
use crate::keystore::Keystore;
use crate::store::Store;

/// What a listener does with a request now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "error")]
pub enum ListenerState {
    Listening,
    Paused,
    Errored(String),
}

/// Per-listener counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub refused: AtomicU64,
}

struct Entry {
    /// The version serving requests, if any loaded successfully.
    spec: Option<Arc<ListenerSpec>>,
    /// Why the bundle on disk could not be loaded. With `spec` set, the
    /// previous version keeps serving (hot reload refused the new one).
    load_error: Option<String>,
    /// Set when another listener already claims this route.
    route_error: Option<String>,
    paused: bool,
    counters: Arc<Counters>,
    /// The bundle folder as last loaded (see [`fingerprint`]).
    fingerprint: u64,
}

impl Entry {
    fn state(&self) -> ListenerState {
        match (&self.spec, &self.route_error) {
            (_, Some(e)) => ListenerState::Errored(e.clone()),
            (None, None) => ListenerState::Errored(
                self.load_error
                    .clone()
                    .unwrap_or_else(|| "not loaded".into()),
            ),
            (Some(_), None) if self.paused => ListenerState::Paused,
            (Some(_), None) => ListenerState::Listening,
        }
    }

    fn set_loaded(&mut self, loaded: Result<Arc<ListenerSpec>, String>) {
        match loaded {
            Ok(spec) => {
                self.spec = Some(spec);
                self.load_error = None;
            }
            Err(e) => {
                self.spec = None;
                self.load_error = Some(e);
            }
        }
    }
}

/// A listener as `atom listeners` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    pub id: String,
    #[serde(flatten)]
    pub state: ListenerState,
    pub as2_from: Option<String>,
    pub as2_to: Option<String>,
    pub received: u64,
    pub refused: u64,
    /// A newer bundle version that was refused; the listed version serves on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_error: Option<String>,
}

/// A deployed bundle as `atom processes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub name: String,
    /// The version serving, if one loaded.
    pub version: Option<String>,
    /// The bundle's own mode, if it overrides the runtime default.
    pub mode: Option<crate::config::WorkerMode>,
    pub steps: Vec<String>,
    pub max_concurrent_executions: Option<usize>,
    #[serde(flatten)]
    pub state: ListenerState,
    /// A newer version that was refused; the listed one serves on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_error: Option<String>,
}

/// What routing found for a request.
pub struct Routed {
    pub spec: Arc<ListenerSpec>,
    pub state: ListenerState,
    pub counters: Arc<Counters>,
}

/// The result of an operator action on one listener.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub id: String,
    pub ok: bool,
    pub message: String,
}

pub struct Registry {
    processes_dir: PathBuf,
    keystore: Keystore,
    engine: Arc<dyn ProcessEngine>,
    data_dir: PathBuf,
    /// `delivery.allowed_directories`: where else disk steps may write
    /// (set once at start, before bundles load).
    allowed_directories: std::sync::OnceLock<Vec<PathBuf>>,
    /// `partners_dir`: the profiles `as2` steps send with (set at start).
    partners_dir: std::sync::OnceLock<PathBuf>,
    store: Arc<dyn Store>,
    inner: RwLock<Inner>,
    /// Restarts of each listener seen so far (asked here or on another
    /// node), to tell a new one in the store's count.
    restarts_seen: std::sync::Mutex<HashMap<String, i64>>,
}

#[derive(Default)]
struct Inner {
    listeners: BTreeMap<String, Entry>,
    routes: HashMap<(String, String), String>,
}

impl Inner {
    fn rebuild_routes(&mut self) {
        self.routes.clear();
        for (id, entry) in self.listeners.iter_mut() {
            entry.route_error = None;
            let Some(spec) = &entry.spec else { continue };
            let key = (spec.our_id.clone(), spec.partner_id.clone());
            match self.routes.get(&key) {
                Some(owner) => {
                    entry.route_error = Some(format!(
                        "duplicate route: AS2-To {:?} / AS2-From {:?} is already served by listener {owner:?}",
                        key.0, key.1
                    ))
                }
                None => {
                    self.routes.insert(key, id.clone());
                }
            }
        }
    }
}

impl Registry {
    pub fn new(
        processes_dir: PathBuf,
        keystore: Keystore,
        engine: Arc<dyn ProcessEngine>,
        data_dir: PathBuf,
        store: Arc<dyn Store>,
    ) -> Registry {
        Registry {
            processes_dir,
            keystore,
            engine,
            data_dir,
            allowed_directories: std::sync::OnceLock::new(),
            partners_dir: std::sync::OnceLock::new(),
            store,
            inner: RwLock::new(Inner::default()),
            restarts_seen: Default::default(),
        }
    }

    /// Lets disk steps also write inside these directories (absolute,
    /// from `delivery.allowed_directories`); call before `load_all`. Only
    /// the first call counts: the roots do not change while running.
    pub fn set_allowed_directories(&self, roots: Vec<PathBuf>) {
        if self.allowed_directories.set(roots).is_err() {
            tracing::warn!("delivery.allowed_directories were already set; keeping the first");
        }
    }

    /// Where `as2` steps find partner profiles (`partners_dir`); call
    /// before `load_all`. Only the first call counts.
    pub fn set_partners_dir(&self, dir: PathBuf) {
        if self.partners_dir.set(dir).is_err() {
            tracing::warn!("partners_dir was already set; keeping the first");
        }
    }

    fn context(&self) -> BundleContext<'_> {
        BundleContext {
            keystore: &self.keystore,
            engine: self.engine.as_ref(),
            data_dir: &self.data_dir,
            allowed_directories: self.allowed_directories.get().map_or(&[], Vec::as_slice),
            partners_dir: self
                .partners_dir
                .get()
                .map_or(std::path::Path::new("partners"), PathBuf::as_path),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every bundle of the processes folder; paused states come from the store.
    pub fn load_all(&self) -> Result<(), String> {
        let shared = self.store.listener_states().map_err(|e| e.to_string())?;
        let paused: HashSet<String> = shared
            .iter()
            .filter(|s| s.paused)
            .map(|s| s.listener.clone())
            .collect();
        *self.seen() = shared
            .into_iter()
            .map(|s| (s.listener, s.restarts))
            .collect();
        let mut bundles: Vec<(String, PathBuf)> = Vec::new();
        match std::fs::read_dir(&self.processes_dir) {
            Ok(read) => {
                for item in read.flatten() {
                    let path = item.path();
                    let name = item.file_name().to_string_lossy().to_string();
                    if path.join(PROCESS_FILE).is_file() && !name.starts_with('.') {
                        bundles.push((name, path));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.processes_dir.display(), "processes folder does not exist; no listeners");
            }
            Err(e) => return Err(format!("{}: {e}", self.processes_dir.display())),
        }
        bundles.sort();
        let mut inner = self.write();
        inner.listeners.clear();
        for (name, path) in bundles {
            let fingerprint = fingerprint(&path);
            let spec = bundle::load(&path, self.context())
                .map(Arc::new)
                .map_err(|e| e.to_string());
            if let Err(e) = &spec {
                tracing::error!(listener = %name, error = %e, "listener errored");
            }
            let mut entry = Entry {
                spec: None,
                load_error: None,
                route_error: None,
                paused: paused.contains(&name),
                counters: Arc::default(),
                fingerprint,
            };
            entry.set_loaded(spec);
            inner.listeners.insert(name, entry);
        }
        inner.rebuild_routes();
        for (id, entry) in &inner.listeners {
            tracing::info!(listener = %id, state = ?entry.state(), "listener loaded");
        }
        Ok(())
    }

    /// The listener for (AS2-To, AS2-From), if any.
    pub fn route(&self, as2_to: &str, as2_from: &str) -> Option<Routed> {
        let inner = self.read();
        let id = inner
            .routes
            .get(&(as2_to.to_string(), as2_from.to_string()))?;
        let entry = inner.listeners.get(id)?;
        let spec = entry.spec.as_ref()?.clone();
        Some(Routed {
            spec,
            state: entry.state(),
            counters: entry.counters.clone(),
        })
    }

    pub fn list(&self) -> Vec<ListenerInfo> {
        let inner = self.read();
        inner
            .listeners
            .iter()
            .map(|(id, e)| ListenerInfo {
                id: id.clone(),
                state: e.state(),
                as2_from: e.spec.as_ref().map(|s| s.partner_id.clone()),
                as2_to: e.spec.as_ref().map(|s| s.our_id.clone()),
                received: e.counters.received.load(Ordering::Relaxed),
                refused: e.counters.refused.load(Ordering::Relaxed),
                pending_error: e.spec.as_ref().and(e.load_error.clone()),
            })
            .collect()
    }

    /// The version of a listener serving now, if any.
    pub fn spec(&self, name: &str) -> Option<Arc<ListenerSpec>> {
        self.read().listeners.get(name)?.spec.clone()
    }

    pub fn processes(&self) -> Vec<ProcessInfo> {
        let inner = self.read();
        inner
            .listeners
            .iter()
            .map(|(name, e)| ProcessInfo {
                name: name.clone(),
                version: e.spec.as_ref().map(|s| s.version.clone()),
                mode: e.spec.as_ref().and_then(|s| s.process.mode),
                steps: e
                    .spec
                    .as_ref()
                    .map(|s| s.process.steps.iter().map(|st| st.describe()).collect())
                    .unwrap_or_default(),
                max_concurrent_executions: e
                    .spec
                    .as_ref()
                    .map(|s| s.process.limits.max_concurrent_executions),
                state: e.state(),
                pending_error: e.spec.as_ref().and(e.load_error.clone()),
            })
            .collect()
    }

    /// IDs for an action: the given ones, or all with `all`.
    pub fn resolve_ids(&self, ids: &[String], all: bool) -> Vec<String> {
        if all {
            self.read().listeners.keys().cloned().collect()
        } else {
            ids.to_vec()
        }
    }

    /// Pauses or resumes listeners; the state is saved before it applies.
    /// An operator action by name (`pause`, `resume`, `restart`), as the
    /// admin API and the console take it.
    pub fn act(&self, action: &str, ids: &[String]) -> Result<Vec<ActionResult>, String> {
        match action {
            "pause" => Ok(self.set_paused(ids, true)),
            "resume" => Ok(self.set_paused(ids, false)),
            "restart" => Ok(self.restart(ids)),
            other => Err(format!(
                "unknown action {other:?}; use pause, resume or restart"
            )),
        }
    }

    pub fn set_paused(&self, ids: &[String], paused: bool) -> Vec<ActionResult> {
        ids.iter()
            .map(|id| {
                if !self.read().listeners.contains_key(id) {
                    return ActionResult {
                        id: id.clone(),
                        ok: false,
                        message: format!("no listener named {id:?}"),
                    };
                }
                if let Err(e) = self.store.set_paused(id, paused) {
                    return ActionResult {
                        id: id.clone(),
                        ok: false,
                        message: e.to_string(),
                    };
                }
                if let Some(entry) = self.write().listeners.get_mut(id) {
                    entry.paused = paused;
                }
                let word = if paused { "paused" } else { "resumed" };
                tracing::info!(listener = %id, action = word, "listener state changed");
                ActionResult {
                    id: id.clone(),
                    ok: true,
                    message: word.into(),
                }
            })
            .collect()
    }

    /// Hot reload of one bundle folder after it changed on disk: a new
    /// bundle is deployed, a removed one undeployed, a changed one swapped
    /// in only if it loads completely (an invalid version leaves the
    /// previous one serving, with the error shown). Requests already
    /// routed keep the version they started with (they hold its `Arc`).
    pub fn reload(&self, name: &str) {
        let path = self.processes_dir.join(name);
        if !path.join(PROCESS_FILE).is_file() {
            let mut inner = self.write();
            if inner.listeners.remove(name).is_some() {
                inner.rebuild_routes();
                tracing::info!(listener = %name, "bundle removed: listener undeployed");
            }
            return;
        }
        let fingerprint = fingerprint(&path);
        let loaded = bundle::load(&path, self.context())
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(e) = &loaded {
            if out_of_descriptors(e) {
                // Not the bundle's fault: leave what serves alone and keep
                // the old fingerprint, so the next rescan tries again.
                tracing::warn!(listener = %name, error = %e, "bundle not reloaded: out of file descriptors; will retry");
                return;
            }
        }
        let paused = self
            .store
            .paused_listeners()
            .map(|p| p.iter().any(|id| id == name))
            .unwrap_or(false);
        let mut inner = self.write();
        let entry = inner
            .listeners
            .entry(name.to_string())
            .or_insert_with(|| Entry {
                spec: None,
                load_error: None,
                route_error: None,
                paused,
                counters: Arc::default(),
                fingerprint,
            });
        entry.fingerprint = fingerprint;
        match loaded {
            Ok(spec) => {
                let version = spec.version.clone();
                entry.set_loaded(Ok(spec));
                tracing::info!(listener = %name, %version, "bundle deployed");
            }
            Err(e) if entry.spec.is_some() => {
                tracing::error!(listener = %name, error = %e, "new bundle version refused; the previous version keeps serving");
                entry.load_error = Some(e);
            }
            Err(e) => {
                tracing::error!(listener = %name, error = %e, "bundle refused");
                entry.set_loaded(Err(e));
            }
        }
        inner.rebuild_routes();
    }

    /// Compares the processes folder with what is deployed and reloads
    /// every bundle that appeared, changed or disappeared. The watcher calls
    /// it on every batch of events, so coalesced or oddly reported renames
    /// (atomic folder exchanges among them) cannot be missed.
    pub fn rescan(&self) {
        let mut on_disk: Vec<(String, u64)> = Vec::new();
        let read = match std::fs::read_dir(&self.processes_dir) {
            Ok(read) => Some(read),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                // Unreadable now (out of descriptors, say) is not empty:
                // undeploying everything would be wrong.
                tracing::warn!(dir = %self.processes_dir.display(), error = %e, "cannot read the processes folder; rescan skipped");
                return;
            }
        };
        if let Some(read) = read {
            for item in read.flatten() {
                let name = item.file_name().to_string_lossy().to_string();
                let path = item.path();
                if !name.starts_with('.') && path.join(PROCESS_FILE).is_file() {
                    on_disk.push((name, fingerprint(&path)));
                }
            }
        }
        let changed: Vec<String> = {
            let inner = self.read();
            let mut changed: Vec<String> = on_disk
                .iter()
                .filter(|(name, fp)| inner.listeners.get(name).map(|e| e.fingerprint) != Some(*fp))
                .map(|(name, _)| name.clone())
                .collect();
            changed.extend(
                inner
                    .listeners
                    .keys()
                    .filter(|name| !on_disk.iter().any(|(n, _)| n == *name))
                    .cloned(),
            );
            changed
        };
        for name in changed {
            self.reload(&name);
        }
    }

    /// Whether the bundle folder `name`, as it is on disk now, is what
    /// serves here, loaded without error (so it may be published).
    pub fn loads_cleanly(&self, name: &str) -> bool {
        let on_disk = fingerprint(&self.processes_dir.join(name));
        self.read().listeners.get(name).is_some_and(|entry| {
            entry.spec.is_some() && entry.load_error.is_none() && entry.fingerprint == on_disk
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.restarts_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies what other nodes changed in the shared listener states:
    /// pauses, resumes and restarts asked there (called every 500 ms by
    /// [`super::follower`]).
    pub fn follow(&self) -> Result<(), String> {
        let shared = self.store.listener_states().map_err(|e| e.to_string())?;
        let mut restart = Vec::new();
        {
            let mut inner = self.write();
            for state in &shared {
                let Some(entry) = inner.listeners.get_mut(&state.listener) else {
                    continue;
                };
                if entry.paused != state.paused {
                    entry.paused = state.paused;
                    let word = if state.paused { "paused" } else { "resumed" };
                    tracing::info!(listener = %state.listener, action = word, "listener state changed on another node");
                }
            }
        }
        {
            let mut seen = self.seen();
            for state in shared {
                let known = seen.entry(state.listener.clone()).or_insert(state.restarts);
                if state.restarts > *known {
                    *known = state.restarts;
                    restart.push(state.listener);
                }
            }
        }
        if !restart.is_empty() {
            tracing::info!(listeners = ?restart, "restart asked on another node");
            self.restart_here(&restart);
        }
        Ok(())
    }

    /// Re-creates listeners from their bundles (re-reading keys), here and
    /// on every other node; clears errors that are gone; a paused listener
    /// stays paused.
    pub fn restart(&self, ids: &[String]) -> Vec<ActionResult> {
        let results = self.restart_here(ids);
        for result in &results {
            if !self.read().listeners.contains_key(&result.id) {
                continue;
            }
            match self.store.count_restart(&result.id) {
                Ok(count) => {
                    self.seen().insert(result.id.clone(), count);
                }
                Err(e) => {
                    tracing::warn!(listener = %result.id, error = %e, "restarted here; other nodes were not told")
                }
            }
        }
        results
    }

    fn restart_here(&self, ids: &[String]) -> Vec<ActionResult> {
        ids.iter()
            .map(|id| {
                let path = self.processes_dir.join(id);
                if !self.read().listeners.contains_key(id) {
                    return ActionResult {
                        id: id.clone(),
                        ok: false,
                        message: format!("no listener named {id:?}"),
                    };
                }
                let fingerprint = fingerprint(&path);
                let spec = bundle::load(&path, self.context())
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                let mut inner = self.write();
                let Some(entry) = inner.listeners.get_mut(id) else {
                    return ActionResult {
                        id: id.clone(),
                        ok: false,
                        message: format!("no listener named {id:?}"),
                    };
                };
                entry.set_loaded(spec);
                entry.fingerprint = fingerprint;
                inner.rebuild_routes();
                let state = inner.listeners.get(id).map(Entry::state);
                tracing::info!(listener = %id, state = ?state, "listener restarted");
                match state {
                    Some(ListenerState::Errored(e)) => ActionResult {
                        id: id.clone(),
                        ok: false,
                        message: e,
                    },
                    Some(ListenerState::Paused) => ActionResult {
                        id: id.clone(),
                        ok: true,
                        message: "restarted (still paused)".into(),
                    },
                    _ => ActionResult {
                        id: id.clone(),
                        ok: true,
                        message: "restarted".into(),
                    },
                }
            })
            .collect()
    }
}

/// Identifies a bundle folder's current contents cheaply: names, sizes,
/// modification times and inodes of its files (a swapped-in folder has new
/// inodes even when sizes and times match).
fn fingerprint(dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &std::path::Path, hasher: &mut std::collections::hash_map::DefaultHasher) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        let mut items: Vec<_> = read.flatten().collect();
        items.sort_by_key(|i| i.file_name());
        for item in items {
            let Ok(meta) = item.metadata() else { continue };
            item.file_name().hash(hasher);
            meta.len().hash(hasher);
            meta.modified().ok().hash(hasher);
            #[cfg(unix)]
            std::os::unix::fs::MetadataExt::ino(&meta).hash(hasher);
            if meta.is_dir() {
                walk(&item.path(), hasher);
            }
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    #[cfg(unix)]
    std::fs::metadata(dir)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok()
        .hash(&mut hasher);
    walk(dir, &mut hasher);
    hasher.finish()
}

/// EMFILE / ENFILE: the process or the system ran out of descriptors
/// (errors reach here as text, with the OS error number).
fn out_of_descriptors(error: &str) -> bool {
    error.contains("os error 24") || error.contains("os error 23")
}
