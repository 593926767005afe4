//! Atomic, durable file writes: the one way retbench writes a result or a
//! snapshot, so that a crash or `kill -9` never leaves half a file under its
//! name, and a file reported written survives a power loss. The data is
//! synced before the rename (so the name never points at unwritten blocks)
//! and the folder after it (so the rename itself is on disk).

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file that could not be read or written, or that holds something it
/// should not: the one file error of the harness and the report, always
/// naming the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Bad { path: PathBuf, message: String },
}

/// Writes `bytes` to `path` through a temporary file in the same folder
/// (named `.<name>.tmp-<pid>-<thread>`): write, fsync the file, rename,
/// fsync the folder. The folder is created if missing; on failure the
/// temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    if !dir.is_dir() {
        // A new folder (`runs/` on a first run) is itself an entry of its
        // parent, which must reach the disk for the file in it to.
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:?}",
        name.to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a folder's entries (a rename into it) to disk. Where a folder
/// cannot be opened as a file (not on Unix), the rename is left to the
/// file system's own ordering.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
