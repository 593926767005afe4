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

/// This machine's name as temporary files carry it: the kernel's hostname
/// with anything but letters, digits and dots dropped (`localhost` where
/// it cannot be read). Processes on several nodes of a cluster write into
/// one shared folder, and a pid alone is unique only on one node.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    if host.is_empty() {
        "localhost".into()
    } else {
        host
    }
}

/// The writer of a temporary file `write_atomic` names, as (host, pid);
/// files from before host names were written give an empty host.
pub fn temp_file_writer(file_name: &str) -> Option<(String, u32)> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (_, rest) = file_name.split_once(".tmp-")?;
    // <host>-<pid>-<thread>, or <pid>-<thread> before hosts were named.
    let mut parts = rest.rsplitn(3, '-');
    let _thread = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    Some((parts.next().unwrap_or("").to_string(), pid))
}

/// Writes `bytes` to `path` through a temporary file in the same folder
/// (named `.<name>.tmp-<host>-<pid>-<thread>`: unique among the writers of
/// a folder shared by a cluster's nodes): write, fsync the file, rename,
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
        ".{}.tmp-{}-{}-{:?}",
        name.to_string_lossy(),
        host_name(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_name_their_writer() {
        let dir = std::env::temp_dir().join(format!("retbench-fsutil-{}", std::process::id()));
        let path = dir.join("x.json");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let name = format!(".x.json.tmp-{}-{}-ThreadId(7)", host_name(), 4321);
        assert_eq!(temp_file_writer(&name), Some((host_name(), 4321)));
        assert_eq!(
            temp_file_writer(".x.json.tmp-node-12.cluster-99-ThreadId(1)"),
            Some(("node-12.cluster".into(), 99))
        );
        assert_eq!(
            temp_file_writer(".x.json.tmp-99-ThreadId(1)"),
            Some((String::new(), 99))
        );
        assert_eq!(temp_file_writer("x.json"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
