//! Watch: a stream of KV events that survives disconnects and server restarts, resuming from
//! the last revision it delivered so that no event is missed or repeated.

use crate::error::{Code, Error};
use crate::transport::Transport as Channel;
use pb::kv_client::KvClient;
use plinth_proto::v1 as pb;
use std::collections::VecDeque;
use std::time::Duration;
use tonic::Streaming;

/// Which keys to watch, and from where.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prefix: bool,
    /// Events after this revision; `None` for events from now on.
    pub from_revision: Option<u64>,
}

impl WatchOptions {
    pub fn key(key: impl Into<Vec<u8>>) -> WatchOptions {
        WatchOptions {
            key: key.into(),
            ..Default::default()
        }
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> WatchOptions {
        WatchOptions {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        }
    }

    pub fn from_revision(mut self, revision: u64) -> WatchOptions {
        self.from_revision = Some(revision);
        self
    }
}

/// A running watch. `next` yields events in revision order. After a disconnect it reconnects
/// with backoff and asks for the events after the last revision the server confirmed complete,
/// so the caller sees every event once. If that history has been compacted meanwhile, `next`
/// returns `COMPACTED` with the revision to re-read from, and the watch ends.
pub struct Watch {
    client: KvClient<Channel>,
    options: WatchOptions,
    /// Every event up to this revision has been received (and is delivered or buffered).
    revision: Option<u64>,
    stream: Option<Streaming<pb::WatchResponse>>,
    buffered: VecDeque<pb::Event>,
    done: bool,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Watch {
    pub(crate) async fn start(
        client: KvClient<Channel>,
        options: WatchOptions,
    ) -> Result<Watch, Error> {
        let mut watch = Watch {
            client,
            revision: options.from_revision,
            options,
            stream: None,
            buffered: VecDeque::new(),
            done: false,
        };
        // The first connection is made now so that a bad request fails here, and so that a
        // watch "from now" learns the revision it started at (the server's first notice).
        watch.connect().await?;
        Ok(watch)
    }

    /// The revision up to which every event has been received.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// The next event; `None` never comes while the watch is healthy (it reconnects), only
    /// after it returned an error that ends it.
    pub async fn next(&mut self) -> Option<Result<pb::Event, Error>> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.stream.is_none()
                && let Err(e) = self.connect().await
            {
                if e.is_transient() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                self.done = true;
                return Some(Err(e));
            }
            let stream = self.stream.as_mut().expect("connected");
            match stream.message().await {
                Ok(Some(reply)) => {
                    backoff = BACKOFF_MIN;
                    self.accept(reply);
                }
                Ok(None) => self.stream = None,
                Err(status) => {
                    let e = Error::from(status);
                    self.stream = None;
                    if !e.is_transient() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let request = pb::WatchRequest {
            key: self.options.key.clone(),
            range_end: self.options.range_end.clone(),
            prefix: self.options.prefix,
            from_revision: self.revision,
        };
        let mut stream = self
            .client
            .watch(request)
            .await
            .map_err(Error::from)?
            .into_inner();
        // The server's first message is a notice carrying the revision the watch starts after.
        match stream.message().await {
            Ok(Some(reply)) => self.accept(reply),
            Ok(None) => {
                return Err(Error::new(
                    Code::Unavailable,
                    "the server ended the watch at once",
                ));
            }
            Err(status) => return Err(status.into()),
        }
        self.stream = Some(stream);
        Ok(())
    }

    fn accept(&mut self, reply: pb::WatchResponse) {
        let floor = self.revision.unwrap_or(0);
        for event in reply.events {
            // Defensive: never hand out an event at or below a revision already complete.
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if self.revision.is_none() || revision > floor {
                self.buffered.push_back(event);
            }
        }
        if let Some(header) = reply.header {
            self.revision = Some(
                self.revision
                    .map_or(header.revision, |r| r.max(header.revision)),
            );
        }
    }
}
