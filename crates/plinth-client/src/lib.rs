//! The plinth Rust SDK: a typed client for every call, a watch that reconnects and resumes
//! without gap or duplicate, a lease keep-alive task, a lock guard that renews its hold, exposes
//! its fencing token and says when the hold is lost, a queue consumer, a scheduler worker, a
//! config watcher that keeps a local snapshot, and a registration and resolver for the service
//! registry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plinth_client::Error> {
//! let client = plinth_client::Client::connect("http://127.0.0.1:7070").await?;
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?.expect("just put");
//! assert_eq!(kv.value, b"hello");
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod lease;
mod lock;
mod queue;
mod registry;
mod schedule;
mod transport;
mod watch;

pub use client::{Client, SnapshotSaved};
pub use config::{ConfigSnapshot, ConfigUpdate, ConfigWatcher, ConfigWatcherStats};
pub use error::{Code, Error};
pub use lease::KeepAlive;
pub use lock::{Election, LockGuard, LockOptions, Lost, Observe};
pub use plinth_proto::v1 as pb;
pub use queue::{Consumer, ConsumerOptions, ConsumerStats};
pub use registry::{Endpoint, Pick, Picked, RegisterOptions, Registration, Resolver};
pub use schedule::{Worker, WorkerOptions, WorkerStats};
pub use watch::{Watch, WatchOptions};

/// Cuts `text` to at most `bytes_max` bytes, at a character boundary: for the reasons and
/// errors a server keeps only so much of.
pub(crate) fn truncate_text(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Waits until a background task reports the error it stopped on: what `Consumer::failed` and
/// `Worker::failed` answer. A task that ends without one leaves the wait pending, as a healthy
/// task would.
pub(crate) async fn reported_failure(
    failure: &tokio::sync::watch::Receiver<Option<Error>>,
) -> Error {
    let mut failure = failure.clone();
    match failure.wait_for(Option::is_some).await {
        Ok(error) => error.clone().expect("waited for Some"),
        Err(_) => std::future::pending().await,
    }
}
