//! NATS JetStream through `async-nats`: a stream with file storage and work-queue retention, a
//! durable pull consumer with explicit acks, and publishes that wait for the stream's ack.

use crate::driver::{Load, Op, arrival_latency_us, closed_loop, histogram, stamped_value};
use crate::workload::{Args, Outcome, op};
use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use futures::{FutureExt as _, StreamExt as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub async fn run(args: &Args, load: &Load) -> Result<Outcome> {
    let name = format!("bench-{}", args.run_id);
    let subject = format!("bench.{}", args.run_id);
    let mut contexts = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = async_nats::connect(&args.endpoint)
            .await
            .with_context(|| format!("connecting to NATS at {}", args.endpoint))?;
        contexts.push(jetstream::new(client));
    }
    let stream = contexts[0]
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: StorageType::File,
            retention: RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("creating the stream: {e}"))?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            "bench",
            pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow!("creating the consumer: {e}"))?;
    let contexts = Arc::new(contexts);
    let (batch, value_size) = (args.batch, args.value_size);
    let delivery = Arc::new(Mutex::new(histogram()));
    let recorded = delivery.clone();
    let op: Op = op(move |worker, _| {
        let context = contexts[worker % contexts.len()].clone();
        let (subject, consumer, delivery) = (subject.clone(), consumer.clone(), recorded.clone());
        async move {
            let mut acks = Vec::with_capacity(batch);
            for _ in 0..batch {
                acks.push(
                    context
                        .publish(subject.clone(), stamped_value(value_size).into())
                        .await
                        .map_err(|e| anyhow!("publish: {e}"))?,
                );
            }
            for ack in acks {
                ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
            }
            let mut got = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while got < batch {
                let mut messages = consumer
                    .fetch()
                    .max_messages(batch - got)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| anyhow!("fetch: {e}"))?;
                let mut fetched = 0;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(|e| anyhow!("fetch: {e}"))?;
                    if let Some(us) = arrival_latency_us(&message.payload) {
                        delivery.lock().expect("not poisoned").saturating_record(us);
                    }
                    message.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                    fetched += 1;
                }
                // Another worker's fetch may have taken ours: fetch again, for a while.
                if fetched == 0 && std::time::Instant::now() >= deadline {
                    bail!("fetches found nothing for 10 s on a stream that should hold messages");
                }
                got += fetched;
            }
            Ok(())
        }
        .boxed()
    });
    let sample = closed_loop(load, op).await;
    let delivery = delivery.lock().expect("not poisoned").clone();
    Ok(Outcome::with_delivery(sample, delivery, batch as u64))
}
