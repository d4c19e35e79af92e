//! RabbitMQ through `lapin`: a durable queue, persistent messages, publisher confirms, and
//! manual acks — the durable configuration comparable to plinth's queue.

use crate::driver::{Load, Op, arrival_latency_us, closed_loop, histogram, stamped_value};
use crate::workload::{Args, Outcome, op};
use anyhow::{Context as _, Result, bail};
use futures::FutureExt as _;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub async fn run(args: &Args, load: &Load) -> Result<Outcome> {
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(
            Connection::connect(&args.endpoint, ConnectionProperties::default())
                .await
                .with_context(|| format!("connecting to RabbitMQ at {}", args.endpoint))?,
        );
    }
    let queue = format!("bench-{}", args.run_id);
    // A channel per worker, over the shared connections; each with publisher confirms.
    let mut channels: Vec<Channel> = Vec::with_capacity(load.concurrency);
    for worker in 0..load.concurrency {
        let channel = connections[worker % connections.len()]
            .create_channel()
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channels.push(channel);
    }
    let channels = Arc::new(channels);
    let (batch, value_size) = (args.batch, args.value_size);
    let delivery = Arc::new(Mutex::new(histogram()));
    let recorded = delivery.clone();
    let op: Op = op(move |worker, _| {
        let channel = channels[worker].clone();
        let (queue, delivery) = (queue.clone(), recorded.clone());
        async move {
            let mut confirms = Vec::with_capacity(batch);
            for _ in 0..batch {
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &stamped_value(value_size),
                            // 2: persistent.
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?,
                );
            }
            for confirm in confirms {
                confirm.await?;
            }
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while got < batch {
                match channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await?
                {
                    Some(message) => {
                        if let Some(us) = arrival_latency_us(&message.delivery.data) {
                            delivery.lock().expect("not poisoned").saturating_record(us);
                        }
                        message.delivery.ack(BasicAckOptions::default()).await?;
                        got += 1;
                    }
                    None if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_micros(200)).await
                    }
                    None => {
                        bail!("a get found nothing for 5 s on a queue that should hold messages")
                    }
                }
            }
            Ok(())
        }
        .boxed()
    });
    let sample = closed_loop(load, op).await;
    let delivery = delivery.lock().expect("not poisoned").clone();
    Ok(Outcome::with_delivery(sample, delivery, batch as u64))
}
