//! The local data directory shared by `vaani dev`, `vaani calls` and `vaani tenant`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vaani_store::embedded::EmbeddedStore;
use vaani_store::Stores;

/// Default data directory: `$VAANI_DATA`, else `$XDG_DATA_HOME/vaani`, else
/// `~/.local/share/vaani`, else `./.vaani`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VAANI_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("vaani");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/share/vaani");
    }
    PathBuf::from(".vaani")
}

pub fn open_store(dir: &Path) -> anyhow::Result<Stores> {
    let store = EmbeddedStore::open(dir)
        .with_context(|| format!("opening the local store in {}", dir.display()))?;
    Ok(store.stores())
}

/// The HMAC key for media tokens, created on first use and kept in the data directory (0600).
pub fn media_token_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("media-token.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key =
            hex::decode(text.trim()).with_context(|| format!("{} is corrupt", path.display()))?;
        if key.len() >= 32 {
            return Ok(key);
        }
    }
    let key = random_bytes(32)?;
    std::fs::create_dir_all(dir)?;
    write_private(&path, &hex::encode(&key))?;
    Ok(key)
}

/// The media token key `vaani dev` made in `dir`, without making one: a client (`vaani dial`)
/// must sign with the key the running node checks.
pub fn existing_media_token_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("media-token.key");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no media token key at {}: start `vaani dev --data {}` first, or pass the --data it uses",
            path.display(),
            dir.display()
        )
    })?;
    let key = hex::decode(text.trim()).with_context(|| format!("{} is corrupt", path.display()))?;
    anyhow::ensure!(key.len() >= 32, "{} is corrupt (too short)", path.display());
    Ok(key)
}

pub fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
