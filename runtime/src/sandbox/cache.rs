//! On-disk cache of compiled components, keyed by module digest and engine.
//!
//! Deserializing compiled code is `unsafe`: wasmtime trusts it to be its own
//! output. So an artifact is loaded only if this node wrote it: the cache
//! directory must belong to this user and be writable by no one else, and each
//! artifact must match the SHA-256 recorded beside it when it was written (which
//! also catches a torn write). Anything else is recompiled and overwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache directory of one engine configuration.
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating it, mode 0700) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<ArtifactCache> {
        fs::create_dir_all(dir)?;
        if fs::metadata(dir)?.uid() == euid() {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_key: engine_key(engine),
        })
    }

    /// The compiled component for `digest`: loaded from the cache when this node
    /// wrote a valid artifact, compiled with `compile` (and cached) otherwise.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<Component> {
        let path = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if let Some(bytes) = self.trusted_artifact(&path) {
            // SAFETY: the bytes are an artifact this node serialized with an engine
            // of the same configuration (the key in the file name), verified by
            // the checksum written with it in a directory only we can write.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cached artifact rejected; recompiling")
                }
            }
        }
        let component = compile()?;
        if let Err(e) = self.store(&path, &component.serialize()?) {
            tracing::warn!(%digest, error = %e, "could not cache compiled artifact");
        }
        Ok(component)
    }

    fn trusted_artifact(&self, path: &Path) -> Option<Vec<u8>> {
        let meta = fs::metadata(&self.dir).ok()?;
        let uid = euid();
        if meta.uid() != uid || meta.mode() & 0o022 != 0 {
            return None;
        }
        let file_meta = fs::metadata(path).ok()?;
        if file_meta.uid() != uid {
            return None;
        }
        let bytes = fs::read(path).ok()?;
        let recorded = fs::read_to_string(path.with_extension("sha256")).ok()?;
        (hex::encode(Sha256::digest(&bytes)) == recorded.trim()).then_some(bytes)
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        let sum_tmp = path.with_extension(format!("sha256.tmp{}", std::process::id()));
        fs::write(&sum_tmp, hex::encode(Sha256::digest(bytes)))?;
        fs::rename(&sum_tmp, path.with_extension("sha256"))
    }
}

/// A key for everything that makes a compiled artifact loadable: our version,
/// wasmtime's, and the engine settings that affect generated code.
pub fn engine_key(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl std::hash::Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    h.0.update(concat!(
        "stoker ",
        env!("CARGO_PKG_VERSION"),
        " wasmtime 48.0.8"
    ));
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    hex::encode(&h.0.finalize()[..12])
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
