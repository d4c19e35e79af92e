//! Small durable files next to the log (Raft vote, purge point, snapshots) and directory fsync.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::WalError;

/// Replaces `path` with `bytes` so that after a crash the file holds either
/// the old or the new contents, never a mix: the bytes go to a temporary file
/// in the same directory, which is fsynced, renamed over `path`, and then the
/// directory is fsynced so the rename itself survives.
///
/// The temporary name is fixed per target (`.{name}.tmp`) so a crash leaves at
/// most one stale copy, which the next write replaces; callers must therefore
/// not write the same path from two threads at once.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let file_name = path.file_name().ok_or_else(|| {
        WalError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = parent_dir(path);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);

    let mut file = File::create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| WalError::io(&tmp, e))?;
    file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| WalError::io(path, e))?;
    sync_dir(&dir)
}

/// Reads a file written by [`write_file_atomic`]; `None` if it does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>, WalError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io(path, e)),
    }
}

/// Makes creations, deletions and renames of entries in `dir` durable; file
/// data fsyncs do not cover the directory entry that names the file.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

/// The directory holding `path`; a bare file name lives in the current directory.
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
