//! Queues: the calls, and a [`Consumer`] that runs handlers concurrently, acks on success, nacks
//! with exponential backoff on failure, extends visibility while a handler works, and shuts down
//! gracefully.

use crate::client::{Client, millis};
use crate::error::{Code, Error};
use plinth_proto::v1 as pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The server's limits on a nack: its delay and its reason.
use plinth_proto::limits::{
    QUEUE_DELAY_MS_MAX, QUEUE_REASON_BYTES_MAX as REASON_BYTES_MAX, QUEUE_VISIBILITY_MS_MAX,
};

const DELAY_MAX: Duration = Duration::from_millis(QUEUE_DELAY_MS_MAX);

impl Client {
    /// Creates a queue (0 fields of `config` take the defaults); an existing queue with the same
    /// settings is not an error.
    pub async fn queue_create(
        &self,
        name: impl Into<String>,
        config: pb::QueueConfig,
    ) -> Result<pb::QueueCreateResponse, Error> {
        let request = pb::QueueCreateRequest {
            name: name.into(),
            config: Some(config),
        };
        Ok(self.queue.clone().create(request).await?.into_inner())
    }

    pub async fn queue_delete(&self, name: impl Into<String>) -> Result<u64, Error> {
        let request = pb::QueueDeleteRequest { name: name.into() };
        Ok(self
            .queue
            .clone()
            .delete(request)
            .await?
            .into_inner()
            .messages)
    }

    pub async fn queue_list(&self) -> Result<Vec<pb::QueueInfo>, Error> {
        let request = pb::QueueListRequest {
            serializable: false,
        };
        Ok(self.queue.clone().list(request).await?.into_inner().queues)
    }

    pub async fn queue_stats(&self, name: impl Into<String>) -> Result<pb::QueueInfo, Error> {
        let request = pb::QueueStatsRequest {
            name: name.into(),
            serializable: false,
        };
        Ok(self
            .queue
            .clone()
            .stats(request)
            .await?
            .into_inner()
            .queue
            .unwrap_or_default())
    }

    /// Sends one message and returns its id.
    pub async fn queue_send(
        &self,
        queue: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Result<u64, Error> {
        let request = pb::QueueSendRequest {
            queue: queue.into(),
            body: body.into(),
            ..Default::default()
        };
        Ok(self.queue_send_request(request).await?.message_id)
    }

    pub async fn queue_send_request(
        &self,
        request: pb::QueueSendRequest,
    ) -> Result<pb::QueueSendResponse, Error> {
        Ok(self.queue.clone().send(request).await?.into_inner())
    }

    /// Sends up to 100 messages at once, all or none.
    pub async fn queue_send_batch(
        &self,
        queue: impl Into<String>,
        messages: Vec<pb::QueueSendEntry>,
    ) -> Result<Vec<pb::QueueSendResult>, Error> {
        let request = pb::QueueSendBatchRequest {
            queue: queue.into(),
            messages,
        };
        Ok(self
            .queue
            .clone()
            .send_batch(request)
            .await?
            .into_inner()
            .results)
    }

    /// Receives up to `max` messages, waiting up to `wait` (at most 20 s) for one to be visible.
    pub async fn queue_receive(
        &self,
        queue: impl Into<String>,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<pb::QueueDelivery>, Error> {
        let reply = self
            .queue_receive_request(pb::QueueReceiveRequest {
                queue: queue.into(),
                max,
                wait_ms: millis(wait),
                ..Default::default()
            })
            .await?;
        Ok(reply.messages)
    }

    /// A receive with every option: its own visibility, and receipts to ack first in the same
    /// write (`ack`: a consumer acks what it finished as it asks for more). The reply counts the
    /// receipts acked (`acked`) and lists those that did not ack (`ack_failures`, `STALE_TOKEN`)
    /// beside the deliveries; a server older than `ack` answers neither, and acked nothing.
    pub async fn queue_receive_request(
        &self,
        request: pb::QueueReceiveRequest,
    ) -> Result<pb::QueueReceiveResponse, Error> {
        Ok(self.queue.clone().receive(request).await?.into_inner())
    }

    /// Deletes a received message; `STALE_TOKEN` if the receipt is no longer the current
    /// delivery (its visibility ran out and it was delivered again, or it was already acked).
    pub async fn queue_ack(
        &self,
        queue: impl Into<String>,
        receipt: impl Into<String>,
    ) -> Result<(), Error> {
        let request = pb::QueueAckRequest {
            queue: queue.into(),
            receipt: receipt.into(),
        };
        self.queue.clone().ack(request).await?;
        Ok(())
    }

    /// Gives a received message back, visible again after `delay`; answers whether it went to
    /// the dead-letter queue.
    pub async fn queue_nack(
        &self,
        queue: impl Into<String>,
        receipt: impl Into<String>,
        delay: Duration,
        reason: impl Into<String>,
    ) -> Result<bool, Error> {
        let request = pb::QueueNackRequest {
            queue: queue.into(),
            receipt: receipt.into(),
            delay_ms: millis(delay),
            reason: reason.into(),
        };
        Ok(self
            .queue
            .clone()
            .nack(request)
            .await?
            .into_inner()
            .dead_lettered)
    }

    /// Moves the end of a delivery's visibility to `visibility` from now.
    pub async fn queue_change_visibility(
        &self,
        queue: impl Into<String>,
        receipt: impl Into<String>,
        visibility: Duration,
    ) -> Result<u64, Error> {
        let request = pb::QueueChangeVisibilityRequest {
            queue: queue.into(),
            receipt: receipt.into(),
            visibility_ms: millis(visibility),
        };
        Ok(self
            .queue
            .clone()
            .change_visibility(request)
            .await?
            .into_inner()
            .visible_at_ms)
    }

    /// Moves up to `max` (all when 0) dead letters of `dlq` back to `to`, or to where each came
    /// from.
    pub async fn queue_redrive(
        &self,
        dlq: impl Into<String>,
        to: Option<String>,
        max: u64,
    ) -> Result<u64, Error> {
        let request = pb::QueueRedriveRequest {
            dlq: dlq.into(),
            to: to.unwrap_or_default(),
            max,
        };
        Ok(self
            .queue
            .clone()
            .redrive(request)
            .await?
            .into_inner()
            .moved)
    }

    pub async fn queue_purge(&self, name: impl Into<String>) -> Result<u64, Error> {
        let request = pb::QueuePurgeRequest { name: name.into() };
        Ok(self
            .queue
            .clone()
            .purge(request)
            .await?
            .into_inner()
            .messages)
    }

    /// Starts a [`Consumer`] of `queue` that runs `handler` on every message.
    pub fn consume<H, F, E>(
        &self,
        queue: impl Into<String>,
        options: ConsumerOptions,
        handler: H,
    ) -> Consumer
    where
        H: Fn(pb::QueueDelivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        Consumer::start(self.clone(), queue.into(), options, handler)
    }
}

/// How a [`Consumer`] runs.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Handlers running at once.
    pub concurrency: usize,
    /// Long-poll wait of each receive; also the longest a shutdown waits for an idle worker.
    pub wait: Duration,
    /// Visibility of each delivery; extended while its handler runs. `None`: the queue's.
    pub visibility: Option<Duration>,
    /// A failed message comes back after `backoff_base * 2^(receive_count - 1)`, at most
    /// `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> ConsumerOptions {
        ConsumerOptions {
            concurrency: 4,
            wait: Duration::from_secs(5),
            visibility: None,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

impl ConsumerOptions {
    fn backoff(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        (self.backoff_base * 2u32.pow(exponent))
            .min(self.backoff_max)
            .min(DELAY_MAX)
    }
}

/// What a consumer has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub acked: u64,
    pub nacked: u64,
    /// Acks refused because the delivery had gone stale (its visibility ran out while the
    /// handler ran): the message will be, or was, delivered again. Rarely, an ack whose receive
    /// was applied but whose answer was lost in transit, and that was sent again.
    pub stale: u64,
}

/// Runs `concurrency` handler loops on a queue. Each receives one message at a time (long
/// polling), runs the handler, and acks on `Ok` or nacks on `Err` with exponential backoff. The
/// ack rides on the loop's next receive, one write for both (or goes alone when no receive
/// follows). While a handler runs, the delivery's visibility is extended every third of its
/// length, so a slow handler does not see its message delivered again. [`Consumer::shutdown`]
/// stops receiving, lets running handlers finish and ack or nack, and gives back at once any
/// message a last receive brought in.
pub struct Consumer {
    stop: watch::Sender<bool>,
    tasks: JoinSet<ConsumerStats>,
    failure: watch::Receiver<Option<Error>>,
}

impl Consumer {
    fn start<H, F, E>(
        client: Client,
        queue: String,
        options: ConsumerOptions,
        handler: H,
    ) -> Consumer
    where
        H: Fn(pb::QueueDelivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let (failed, failure) = watch::channel(None);
        let failed = Arc::new(failed);
        let handler = Arc::new(handler);
        let mut tasks = JoinSet::new();
        for _ in 0..options.concurrency.max(1) {
            let worker = Worker {
                client: client.clone(),
                queue: queue.clone(),
                options: options.clone(),
                stopped: stopped.clone(),
                failed: failed.clone(),
            };
            let handler = handler.clone();
            tasks.spawn(async move { worker.run(handler).await });
        }
        Consumer {
            stop,
            tasks,
            failure,
        }
    }

    /// Resolves when the consumer stopped on an error that retrying cannot mend (the queue does
    /// not exist, or was deleted), with that error. Transient errors (the server restarting, a
    /// leader change) are retried and never end up here.
    pub async fn failed(&self) -> Error {
        crate::reported_failure(&self.failure).await
    }

    /// Stops receiving, waits for running handlers to finish (each acks or nacks its message),
    /// and returns what the consumer did.
    pub async fn shutdown(mut self) -> ConsumerStats {
        let _ = self.stop.send(true);
        let mut total = ConsumerStats::default();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(stats) = done {
                total.acked += stats.acked;
                total.nacked += stats.nacked;
                total.stale += stats.stale;
            }
        }
        total
    }
}

struct Worker {
    client: Client,
    queue: String,
    options: ConsumerOptions,
    stopped: watch::Receiver<bool>,
    failed: Arc<watch::Sender<Option<Error>>>,
}

impl Worker {
    async fn run<H, F, E>(self, handler: Arc<H>) -> ConsumerStats
    where
        H: Fn(pb::QueueDelivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let mut stats = ConsumerStats::default();
        // The visibility each delivery gets, so the worker knows when to extend it.
        let visibility = loop {
            if let Some(visibility) = self.options.visibility {
                break visibility;
            }
            match self.client.queue_stats(self.queue.clone()).await {
                Ok(info) => {
                    break Duration::from_millis(info.config.unwrap_or_default().visibility_ms);
                }
                Err(e) if e.is_transient() && !*self.stopped.borrow() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(queue = %self.queue, error = %e, "consumer stopped: no such queue");
                    self.failed.send_replace(Some(e));
                    return stats;
                }
            }
        };
        // Within the server's limits: at least 200 ms, at most 12 h.
        let visibility = visibility.clamp(
            Duration::from_millis(200),
            Duration::from_millis(QUEUE_VISIBILITY_MS_MAX),
        );
        // Receipts of handled messages, acked by the next receive in the same write.
        let mut to_ack: Vec<String> = Vec::new();
        while !*self.stopped.borrow() {
            let request = pb::QueueReceiveRequest {
                queue: self.queue.clone(),
                max: 1,
                visibility_ms: millis(visibility),
                wait_ms: millis(self.options.wait),
                ack: to_ack.clone(),
            };
            // A receive is not cut short by a shutdown: the server may already have handed it a
            // message, which is then released below rather than left in flight.
            let received = self.client.queue_receive_request(request).await;
            let deliveries = match received {
                Ok(reply) => {
                    let answered = reply.acked as usize + reply.ack_failures.len();
                    if answered < to_ack.len() {
                        // A server older than acks on receives ignored them: ack on its own.
                        self.ack_alone(to_ack.drain(..), &mut stats).await;
                    }
                    // A receipt that did not ack was redelivered (its visibility ran out) or,
                    // after a receive that failed in transit and was sent again, acked already.
                    for receipt in to_ack.drain(..) {
                        if reply.ack_failures.iter().any(|f| f.receipt == receipt) {
                            stats.stale += 1;
                        } else {
                            stats.acked += 1;
                        }
                    }
                    reply.messages
                }
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(queue = %self.queue, error = %e, "consumer stopped: receive failed");
                    self.failed.send_replace(Some(e));
                    break;
                }
            };
            for delivery in deliveries {
                if *self.stopped.borrow() {
                    // Shutting down: give the message back at once for another consumer.
                    let released = self
                        .client
                        .queue_change_visibility(
                            self.queue.clone(),
                            delivery.receipt,
                            Duration::ZERO,
                        )
                        .await;
                    if let Err(e) = released {
                        tracing::warn!(queue = %self.queue, error = %e, "could not release a message on shutdown");
                    }
                    continue;
                }
                if let Some(receipt) = self
                    .handle(&handler, delivery, visibility, &mut stats)
                    .await
                {
                    to_ack.push(receipt);
                }
            }
        }
        // No receive follows: what is left to ack is acked on its own.
        self.ack_alone(to_ack, &mut stats).await;
        stats
    }

    /// Acks each receipt with a call of its own.
    async fn ack_alone(
        &self,
        receipts: impl IntoIterator<Item = String>,
        stats: &mut ConsumerStats,
    ) {
        for receipt in receipts {
            let acked = self
                .client
                .queue_ack(self.queue.clone(), receipt.clone())
                .await
                .map(|()| stats.acked += 1);
            self.count(acked, &receipt, stats);
        }
    }

    fn count(&self, result: Result<(), Error>, receipt: &str, stats: &mut ConsumerStats) {
        match result {
            Ok(()) => {}
            Err(e) if e.code == Code::StaleToken => stats.stale += 1,
            Err(e) => {
                tracing::warn!(queue = %self.queue, receipt, error = %e, "could not ack or nack; the message will come back when its visibility ends");
            }
        }
    }

    /// Runs the handler on one delivery, extending its visibility while it runs. A failure is
    /// nacked here; a success answers the receipt, for the next receive to ack.
    async fn handle<H, F, E>(
        &self,
        handler: &Arc<H>,
        delivery: pb::QueueDelivery,
        visibility: Duration,
        stats: &mut ConsumerStats,
    ) -> Option<String>
    where
        H: Fn(pb::QueueDelivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let receipt = delivery.receipt.clone();
        let receive_count = delivery.receive_count;
        let work = handler(delivery);
        tokio::pin!(work);
        let mut extend =
            tokio::time::interval_at(tokio::time::Instant::now() + visibility / 3, visibility / 3);
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome.map_err(|e| e.to_string()),
                _ = extend.tick() => {
                    if let Err(e) = self.client.queue_change_visibility(self.queue.clone(), receipt.clone(), visibility).await {
                        tracing::warn!(queue = %self.queue, receipt, error = %e, "could not extend visibility");
                    }
                }
            }
        };
        match outcome {
            // Acked by the next receive (or on its own if none follows).
            Ok(()) => Some(receipt),
            Err(mut reason) => {
                // The server keeps at most 1 KiB of reason.
                crate::truncate_text(&mut reason, REASON_BYTES_MAX);
                let delay = self.options.backoff(receive_count);
                let nacked = self
                    .client
                    .queue_nack(self.queue.clone(), receipt.clone(), delay, reason)
                    .await
                    .map(|_| stats.nacked += 1);
                self.count(nacked, &receipt, stats);
                None
            }
        }
    }
}
