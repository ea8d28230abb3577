//! Keeps a [`PluginRegistry`] in step with its directory while the host runs.
//!
//! inotify (through `notify`) reports creations, writes, renames and removals; the
//! paths are debounced briefly (a copy arrives as many writes) and each is synced
//! once. Access events are ignored (the registry reading a file makes them). When
//! the kernel queue overflows, the whole directory is rescanned.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::registry::PluginRegistry;

/// Quiet time after the last event before files are read.
const DEBOUNCE: Duration = Duration::from_millis(50);

enum Change {
    Path(PathBuf),
    Rescan,
}

/// A running watcher; dropping it stops watching.
#[derive(Debug)]
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginWatcher {
    /// Watch the registry's directory. Scan it (`PluginRegistry::scan`) after this
    /// returns, not before, so that nothing written in between is missed. Must be
    /// called inside a tokio runtime.
    pub fn start(registry: Arc<PluginRegistry>) -> notify::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<Event>| match res {
                Ok(event) if event.need_rescan() => {
                    let _ = tx.send(Change::Rescan);
                }
                Ok(event) if relevant(&event.kind) => {
                    for p in event.paths {
                        let _ = tx.send(Change::Path(p));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "plugin directory watch error; rescanning");
                    let _ = tx.send(Change::Rescan);
                }
            })?;
        watcher.watch(registry.dir(), RecursiveMode::NonRecursive)?;
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut paths = BTreeSet::new();
                let mut rescan = false;
                let mut take = |c: Change| match c {
                    Change::Path(p) => {
                        paths.insert(p);
                    }
                    Change::Rescan => rescan = true,
                };
                take(first);
                // Debounce: wait until the directory has been quiet for a moment.
                while let Ok(Some(c)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    take(c);
                }
                if rescan {
                    if let Err(e) = registry.scan().await {
                        tracing::error!(error = %e, "cannot scan the plugin directory");
                    }
                } else {
                    for p in paths {
                        registry.sync_file(&p).await;
                    }
                }
            }
        });
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // A file closed after writing: the surest sign a copy is complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}
