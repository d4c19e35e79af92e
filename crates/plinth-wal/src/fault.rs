//! Fault hooks for tests, compiled only with the `fault-injection` feature: a slow disk, and a
//! disk that dies.
//!
//! `PLINTH_FAULT_FSYNC_DELAY_MS=<ms>` in a process's environment makes every data fsync of its
//! logs wait that long first, as a disk with a deep queue or a failing drive would. The fault
//! tests set it on one replica to show that a slow member slows nothing and loses nothing.
//!
//! `PLINTH_FAULT_FSYNC_FAIL_IF=<path>` fails every data fsync with `EIO` once a file exists at
//! `path`, as a drive that died would: a test creates the file when the server is up, to show
//! that the process then exits, loudly, instead of living on refusing every write.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Runs before each data fsync: waits if the disk is slow, fails if it has died.
pub(crate) fn before_fsync() -> std::io::Result<()> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    static FAIL_IF: OnceLock<Option<PathBuf>> = OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("PLINTH_FAULT_FSYNC_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
    let fail_if =
        FAIL_IF.get_or_init(|| std::env::var_os("PLINTH_FAULT_FSYNC_FAIL_IF").map(PathBuf::from));
    match fail_if {
        Some(path) if path.exists() => Err(std::io::Error::from_raw_os_error(EIO)),
        _ => Ok(()),
    }
}

/// What fsync answers on Linux when the device failed the write-back.
const EIO: i32 = 5;
