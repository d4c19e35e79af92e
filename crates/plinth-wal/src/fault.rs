//! Fault hooks for tests, compiled only with the `fault-injection` feature: a slow disk.
//!
//! `PLINTH_FAULT_FSYNC_DELAY_MS=<ms>` in a process's environment makes every data fsync of its
//! logs wait that long first, as a disk with a deep queue or a failing drive would. The fault
//! tests set it on one replica to show that a slow member slows nothing and loses nothing.

use std::sync::OnceLock;
use std::time::Duration;

pub(crate) fn slow_disk() {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("PLINTH_FAULT_FSYNC_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}
