//! The compiled-code cache: precompiled components on disk, keyed by the component's sha256
//! and the engine's compatibility hash. Loading an entry runs it as native code, so an entry
//! is trusted only when it is tied to the component asked for: its header names that
//! component's sha256 and the sha256 of its own body, it is a plain file (no link) owned by
//! this user or root that nobody else can write, in a folder nobody else can write. Anything
//! else (damaged, truncated, another engine's, another component's) is compiled again and
//! replaced, never loaded; a folder that others can write is refused.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes at the start of an entry: magic, the component's sha256, the sha256 of the body.
const MAGIC: &[u8; 8] = b"NXTCWAS2";

#[derive(Debug, Error)]
pub enum CacheError {
    #[error(
        "the compiled-code cache {dir} can be written by other users (mode {mode:o}, owner \
         uid {uid}); nixtest runs what it holds as native code. Run `chmod go-w {dir}` (and \
         make it yours), or point NIXTEST_CACHE_DIR at a folder only you can write"
    )]
    Writable { dir: PathBuf, mode: u32, uid: u32 },
    #[error(
        "the compiled-code cache {dir} is not a folder (or is a link); point NIXTEST_CACHE_DIR elsewhere"
    )]
    NotADir { dir: PathBuf },
    #[error("cannot create the compiled-code cache {dir}: {source}")]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Owned by us (or root) and writable by nobody else.
fn trusted(meta: &std::fs::Metadata) -> bool {
    (meta.uid() == euid() || meta.uid() == 0) && meta.mode() & 0o022 == 0
}

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    /// Opens (creating it, private) the cache folder; refuses one that others can write.
    pub fn open(dir: PathBuf, engine: &Engine) -> Result<Self, CacheError> {
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(CacheError::NotADir { dir });
                }
                if !trusted(&meta) {
                    return Err(CacheError::Writable {
                        mode: meta.mode() & 0o7777,
                        uid: meta.uid(),
                        dir,
                    });
                }
            }
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|source| CacheError::Create {
                    dir: dir.clone(),
                    source,
                })?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
                    |source| CacheError::Create {
                        dir: dir.clone(),
                        source,
                    },
                )?;
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompiledCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
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
        if let Some(component) = self.load(engine, &path, sha256) {
            return Ok(component);
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.store(&path, sha256, &compiled) {
            tracing::warn!(path = %path.display(), "cannot write the compiled-code cache: {e}");
        }
        // SAFETY: `compiled` was produced by this engine a moment ago.
        let component =
            unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| format!("{e:#}"));
        drop(compiled);
        release_freed_memory();
        component
    }

    /// Loads an entry if it is this component's, intact, private and made by a compatible
    /// engine.
    fn load(&self, engine: &Engine, path: &Path, sha256: &str) -> Option<Component> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || !trusted(&meta) {
            tracing::warn!(path = %path.display(), "compiled-code cache entry is a link or writable by others; recompiling");
            return None;
        }
        let data = std::fs::read(path).ok()?;
        let Some(body) = verify(&data, sha256) else {
            tracing::warn!(path = %path.display(), "compiled-code cache entry is damaged or another component's; recompiling");
            return None;
        };
        // SAFETY: the bytes are what this cache wrote for this very component (the header
        // names its sha256 and the body's own matches), in a private file and folder, and
        // wasmtime checks that they came from a compatible engine configuration.
        match unsafe { Component::deserialize(engine, body) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "unusable compiled-code cache entry ({e}); recompiling");
                None
            }
        }
    }

    fn store(&self, path: &Path, sha256: &str, compiled: &[u8]) -> std::io::Result<()> {
        let component = hex::decode(sha256).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&component)?;
        tmp.write_all(&Sha256::digest(compiled))?;
        tmp.write_all(compiled)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Gives the memory a compile freed back to the system. A compile's working memory stays in
/// the allocator's arenas otherwise, and the replay that follows a first run's compiles
/// (cold cache) then adds its own on top: 118 MB peak over a 1 GiB log, against 80 MB with
/// the cache warm.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The body of an entry whose header names `sha256` and matches its content.
fn verify<'a>(data: &'a [u8], sha256: &str) -> Option<&'a [u8]> {
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 64 {
        return None;
    }
    let (component, rest) = rest.split_at(32);
    if hex::encode(component) != sha256 {
        return None;
    }
    let (digest, body) = rest.split_at(32);
    (Sha256::digest(body).as_slice() == digest).then_some(body)
}
