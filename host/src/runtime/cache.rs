//! On-disk cache of compiled components, keyed by the file's sha256 and the
//! engine's compatibility hash, so a restart (or a file that comes back) does not
//! pay compilation again: 50-100 ms for a small Rust plugin, seconds for JS/Python.
//!
//! Only artifacts this cache wrote are ever deserialized (deserializing is trusting
//! native code): entries are written to a temp file and renamed into place, so a
//! crash never leaves a half-written entry under a final name.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::ConfigError;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::Cache {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached component for `digest`, if any. A corrupt entry is removed and
    /// treated as a miss.
    ///
    /// The entry is read into memory rather than mapped (`deserialize_file`): a
    /// mapped file truncated under us (a cleanup script, a full disk) would kill the
    /// process with SIGBUS.
    pub(crate) fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry(digest);
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the bytes come from a file `put` wrote (renamed into place whole)
        // from `Component::serialize` of this engine configuration (the name holds
        // the compatibility hash), in the node's own cache directory. wasmtime still
        // checks the header and version before using them.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping unreadable cached artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a compiled component. Failures only cost a recompile later.
    pub(crate) fn put(&self, digest: &str, component: &Component) {
        let path = self.entry(digest);
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|bytes| {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled plugin");
        }
    }
}

/// Feeds `Hash` output into sha256, so the key is stable across Rust releases
/// (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
