//! The compiled-code cache: precompiled components on disk, keyed by the component's sha256
//! and the engine's compatibility hash. Each entry carries the sha256 of its own bytes; an
//! entry that does not match (damaged, truncated, or written by another engine) is compiled
//! again and replaced, never loaded.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes at the start of an entry: magic, then the sha256 of the rest.
const MAGIC: &[u8; 8] = b"NXTCWASM";

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompiledCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    pub fn entry_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation, or a fresh one that is then stored.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Component, String> {
        let path = self.entry_path(sha256);
        if let Some(component) = self.load(engine, &path) {
            return Ok(component);
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(path = %path.display(), "cannot write the compiled-code cache: {e}");
        }
        // SAFETY: `compiled` was produced by this engine a moment ago.
        unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| format!("{e:#}"))
    }

    /// Loads an entry if it is intact and made by a compatible engine.
    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let data = std::fs::read(path).ok()?;
        let body = verify(&data);
        let Some(body) = body else {
            tracing::warn!(path = %path.display(), "damaged compiled-code cache entry; recompiling");
            return None;
        };
        // SAFETY: the bytes are exactly what this cache wrote (their sha256 matches), and
        // wasmtime checks that they came from a compatible engine configuration.
        match unsafe { Component::deserialize(engine, body) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "unusable compiled-code cache entry ({e}); recompiling");
                None
            }
        }
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&Sha256::digest(compiled))?;
        tmp.write_all(compiled)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The body of an entry whose header matches its content.
fn verify(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (digest, body) = rest.split_at(32);
    (Sha256::digest(body).as_slice() == digest).then_some(body)
}
