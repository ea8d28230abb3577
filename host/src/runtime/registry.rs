//! The plugins of one directory: which file serves which job name, at which
//! version, and which files are broken and why.
//!
//! Rules (a user drops, replaces and removes `.wasm` files while the host runs):
//! - a new or changed file is loaded; on success it serves its job name, and jobs
//!   already running keep the version they started with;
//! - a file that fails to load is listed as invalid with the error, and the last
//!   good version of that file (if any) keeps serving;
//! - a job name belongs to the first file that claimed it; another file with the
//!   same name is invalid until the owner goes away;
//! - a removed file stops serving its name;
//! - dot-files and names not ending in `.wasm` are ignored (write to `.x.tmp`, then
//!   rename to `x.wasm`, to publish a file atomically).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use super::Runtime;
use super::plugin::{Plugin, digest_of};
use crate::error::PluginError;

/// A change in the registry, for watchers (tests, the audit changefeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// `file` now serves `name` at `digest` (a new plugin or a new version).
    Loaded {
        name: String,
        digest: String,
        file: PathBuf,
    },
    /// `name` is no longer served (its file was removed or now serves another name).
    Unloaded {
        name: String,
        digest: String,
        file: PathBuf,
    },
    /// `file` could not be loaded.
    Invalid { file: PathBuf, error: String },
}

/// The state of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileStatus {
    Ready,
    Invalid { error: String },
}

/// One file of the directory, as listed to operators.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub file: PathBuf,
    /// Digest of the file's bytes as last read.
    pub digest: Option<String>,
    pub status: FileStatus,
    /// The version serving jobs from this file: the current one when ready, the
    /// last good one when the file is now invalid.
    pub serving: Option<Arc<Plugin>>,
}

#[derive(Debug, Default)]
struct FileRecord {
    digest: Option<String>,
    /// The job name this file serves.
    serves: Option<String>,
    error: Option<String>,
    /// The name another file holds, which kept this one from loading.
    blocked_by: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, Arc<Plugin>>,
    files: BTreeMap<PathBuf, FileRecord>,
}

/// The loaded plugins of one directory.
#[derive(Debug)]
pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    inner: RwLock<Inner>,
    /// Loads are serialized: two events for one file must not race.
    loading: tokio::sync::Mutex<()>,
    events: broadcast::Sender<RegistryEvent>,
}

impl PluginRegistry {
    /// A registry of `dir` (not read until [`scan`](Self::scan)).
    pub fn new(runtime: Arc<Runtime>, dir: &Path) -> std::io::Result<Arc<Self>> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Arc::new(Self {
            runtime,
            dir,
            inner: RwLock::default(),
            loading: tokio::sync::Mutex::new(()),
            events: broadcast::channel(1024).0,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The current version serving `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().by_name.get(name).cloned()
    }

    /// Every known file, in path order.
    pub fn list(&self) -> Vec<PluginEntry> {
        let inner = self.read();
        inner
            .files
            .iter()
            .map(|(file, rec)| PluginEntry {
                file: file.clone(),
                digest: rec.digest.clone(),
                status: match &rec.error {
                    None => FileStatus::Ready,
                    Some(error) => FileStatus::Invalid {
                        error: error.clone(),
                    },
                },
                serving: rec
                    .serves
                    .as_ref()
                    .and_then(|n| inner.by_name.get(n).cloned()),
            })
            .collect()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// Bring the registry in step with the directory: load new and changed files,
    /// unload vanished ones.
    pub async fn scan(&self) -> std::io::Result<()> {
        let mut present = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if is_candidate(&path) {
                present.push(path);
            }
        }
        // Path order, so that which of two same-named files wins is predictable.
        present.sort();
        let known: Vec<PathBuf> = self.read().files.keys().cloned().collect();
        for path in known.into_iter().chain(present) {
            self.sync_file(&path).await;
        }
        Ok(())
    }

    /// Bring one path in step: load it if it is a new or changed plugin file, unload
    /// it if it is gone. Paths outside the directory are ignored.
    pub async fn sync_file(&self, path: &Path) {
        let Some(path) = self.own_path(path) else {
            return;
        };
        let _serial = self.loading.lock().await;
        match tokio::fs::read(&path).await {
            Ok(bytes) if path.is_file() => self.load(&path, bytes).await,
            Ok(_) => self.remove(&path).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.remove(&path).await,
            Err(source) => {
                let err = PluginError::Read {
                    file: path.clone(),
                    source,
                };
                self.record_failure(&path, None, &err);
            }
        }
    }

    fn own_path(&self, path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?;
        let parent = path.parent()?;
        let same_dir = parent == self.dir || parent.canonicalize().ok()? == self.dir;
        let path = self.dir.join(name);
        (same_dir && is_candidate(&path)).then_some(path)
    }

    async fn load(&self, path: &Path, bytes: Vec<u8>) {
        let digest = digest_of(&bytes);
        if self
            .read()
            .files
            .get(path)
            .and_then(|r| r.digest.as_deref())
            == Some(&digest)
        {
            return; // unchanged (a metadata or access event, or a rescan)
        }
        match self.runtime.load_plugin(path, bytes).await {
            Ok(plugin) => self.install(path, plugin),
            Err(err) => self.record_failure(path, Some(digest), &err),
        }
    }

    fn install(&self, path: &Path, plugin: Arc<Plugin>) {
        let name = plugin.name().to_string();
        let mut events = Vec::new();
        {
            let mut inner = self.write();
            let owner = inner.by_name.get(&name).map(|p| p.file().to_path_buf());
            if let Some(owner) = owner.filter(|o| o != path) {
                drop(inner);
                let err = PluginError::NameTaken {
                    file: path.to_path_buf(),
                    name: name.clone(),
                    owner,
                };
                self.record_failure(path, Some(plugin.digest().to_string()), &err);
                self.write()
                    .files
                    .entry(path.to_path_buf())
                    .or_default()
                    .blocked_by = Some(name);
                return;
            }
            let rec = inner.files.entry(path.to_path_buf()).or_default();
            let previous = rec.serves.replace(name.clone()).filter(|old| *old != name);
            rec.digest = Some(plugin.digest().to_string());
            rec.error = None;
            rec.blocked_by = None;
            if let Some(old) = previous.and_then(|old| inner.by_name.remove(&old)) {
                events.push(RegistryEvent::Unloaded {
                    name: old.name().to_string(),
                    digest: old.digest().to_string(),
                    file: path.to_path_buf(),
                });
            }
            inner.by_name.insert(name.clone(), plugin.clone());
            events.push(RegistryEvent::Loaded {
                name,
                digest: plugin.digest().to_string(),
                file: path.to_path_buf(),
            });
        }
        tracing::info!(plugin = plugin.name(), digest = plugin.digest(), file = %path.display(), "plugin loaded");
        self.emit(events);
    }

    fn record_failure(&self, path: &Path, digest: Option<String>, err: &PluginError) {
        let error = err.to_string();
        tracing::warn!(file = %path.display(), %error, "plugin file is invalid");
        {
            let mut inner = self.write();
            let rec = inner.files.entry(path.to_path_buf()).or_default();
            rec.digest = digest;
            rec.error = Some(error.clone());
            rec.blocked_by = None;
        }
        self.emit(vec![RegistryEvent::Invalid {
            file: path.to_path_buf(),
            error,
        }]);
    }

    async fn remove(&self, path: &Path) {
        let (events, freed) = {
            let mut inner = self.write();
            let Some(rec) = inner.files.remove(path) else {
                return;
            };
            let mut events = Vec::new();
            let mut freed = None;
            if let Some(name) = rec.serves {
                if let Some(old) = inner.by_name.remove(&name) {
                    events.push(RegistryEvent::Unloaded {
                        name: name.clone(),
                        digest: old.digest().to_string(),
                        file: path.to_path_buf(),
                    });
                }
                freed = Some(name);
            }
            (events, freed)
        };
        tracing::info!(file = %path.display(), "plugin file removed");
        self.emit(events);
        // A file that lost a name clash may now take the name.
        if let Some(name) = freed {
            let waiting: Vec<PathBuf> = {
                let mut inner = self.write();
                inner
                    .files
                    .iter_mut()
                    .filter(|(_, r)| r.blocked_by.as_deref() == Some(name.as_str()))
                    .map(|(p, r)| {
                        r.digest = None; // force a reload
                        p.clone()
                    })
                    .collect()
            };
            for p in waiting {
                if let Ok(bytes) = tokio::fs::read(&p).await {
                    Box::pin(self.load(&p, bytes)).await;
                }
            }
        }
    }

    fn emit(&self, events: Vec<RegistryEvent>) {
        for e in events {
            // No subscriber is fine.
            let _ = self.events.send(e);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A file the registry cares about: `*.wasm`, not hidden.
fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".wasm") && name.len() > ".wasm".len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_visible_wasm_files() {
        assert!(is_candidate(Path::new("/p/demo.wasm")));
        assert!(!is_candidate(Path::new("/p/.demo.wasm")));
        assert!(!is_candidate(Path::new("/p/demo.wasm.tmp")));
        assert!(!is_candidate(Path::new("/p/.wasm")));
        assert!(!is_candidate(Path::new("/p/readme.md")));
    }
}
