//! `plinth queue ...`: create, send, receive, ack, nack, stats, list, redrive, purge, delete, and
//! consume (a command per message).

use crate::output::{connect, json, text};
use crate::{ClientOpts, Ms, ms_up_to, ms_within};
use anyhow::Context as _;
use plinth_client::{ConsumerOptions, pb};
use plinth_proto::limits;
use std::io::BufRead as _;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

use plinth_proto::limits::QUEUE_SEND_BATCH_MAX as SEND_BATCH_MAX;

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// Create a queue (creating it again with the same settings is fine).
    Create {
        name: String,
        /// How long a received message stays invisible before it is delivered again.
        #[arg(long, default_value_t = Ms(limits::QUEUE_VISIBILITY_MS_DEFAULT), value_parser = ms_within(1, limits::QUEUE_VISIBILITY_MS_MAX))]
        visibility: Ms,
        /// Receives after which a message that comes back goes to the dead-letter queue.
        #[arg(long, default_value_t = limits::QUEUE_MAX_RECEIVES_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(limits::QUEUE_MAX_RECEIVES_MAX)))]
        max_receives: u32,
        /// The dead-letter queue (it must exist).
        #[arg(long)]
        dlq: Option<String>,
        /// How long a message is kept (1m to 14d).
        #[arg(long, default_value_t = Ms(limits::QUEUE_RETENTION_MS_DEFAULT), value_parser = ms_within(limits::QUEUE_RETENTION_MS_MIN, limits::QUEUE_RETENTION_MS_MAX))]
        retention: Ms,
        /// The delay of a send that gives none.
        #[arg(long, default_value_t = Ms(0), value_parser = ms_up_to(limits::QUEUE_DELAY_MS_MAX))]
        delay: Ms,
        /// How long a dedup id is remembered.
        #[arg(long, default_value_t = Ms(limits::QUEUE_DEDUP_WINDOW_MS_DEFAULT), value_parser = ms_within(1, limits::QUEUE_DEDUP_WINDOW_MS_MAX))]
        dedup_window: Ms,
        /// The largest body, in bytes (at most 1 MiB).
        #[arg(long, default_value_t = limits::QUEUE_BODY_BYTES_MAX, value_parser = clap::value_parser!(u64).range(1..=limits::QUEUE_BODY_BYTES_MAX))]
        max_body_bytes: u64,
        /// A FIFO queue: every send names a group; each group is delivered in order, one at a time.
        #[arg(long)]
        fifo: bool,
    },
    /// Send BODY, or every line of stdin as a message when BODY is absent; prints the ids.
    Send {
        name: String,
        body: Option<String>,
        #[arg(long, value_parser = ms_up_to(limits::QUEUE_DELAY_MS_MAX))]
        delay: Option<Ms>,
        #[arg(long)]
        dedup_id: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// An attribute KEY=VALUE; repeat for more.
        #[arg(long = "attr", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
    },
    /// Receive up to --max messages, waiting up to --wait for one; prints `receipt<TAB>body`.
    Receive {
        name: String,
        #[arg(long, default_value_t = 1)]
        max: u32,
        #[arg(long, default_value_t = Ms(0), value_parser = ms_up_to(limits::QUEUE_WAIT_MS_MAX))]
        wait: Ms,
        /// Visibility of these deliveries instead of the queue's.
        #[arg(long, value_parser = ms_within(1, limits::QUEUE_VISIBILITY_MS_MAX))]
        visibility: Option<Ms>,
        /// Ack this receipt first, in the same write (repeatable); one that cannot ack is
        /// reported on stderr and does not stop the receive.
        #[arg(long = "ack", value_name = "RECEIPT")]
        ack: Vec<String>,
    },
    /// Delete a received message.
    Ack { name: String, receipt: String },
    /// Give a received message back.
    Nack {
        name: String,
        receipt: String,
        #[arg(long, default_value_t = Ms(0), value_parser = ms_up_to(limits::QUEUE_DELAY_MS_MAX))]
        delay: Ms,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Counts and settings of a queue.
    Stats { name: String },
    /// Every queue with its counts.
    List,
    /// Move dead letters of DLQ back to where they came from (or --to).
    Redrive {
        dlq: String,
        #[arg(long)]
        to: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        max: u64,
    },
    /// Delete every message of a queue.
    Purge { name: String },
    /// Delete a queue and its messages.
    Delete { name: String },
    /// Run COMMAND for every message, the body on its stdin (and PLINTH_MESSAGE_ID,
    /// PLINTH_RECEIPT, PLINTH_RECEIVE_COUNT in its environment): exit status 0 acks, anything
    /// else nacks with backoff. Runs until SIGINT or SIGTERM, then finishes what is running.
    Consume {
        name: String,
        /// Commands running at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Stop once a receive has waited this long and found nothing.
        #[arg(long, value_parser = ms_up_to(crate::IDLE_MS_MAX))]
        exit_when_idle: Option<Ms>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn info_line(q: &pb::QueueInfo) -> String {
    let s = q.stats.unwrap_or_default();
    format!(
        "{}\tvisible {}\tin flight {}\tdelayed {}\tdead letters {}\tsent {}\tacked {}",
        q.name, s.visible, s.in_flight, s.delayed, s.dead_letters, s.sent, s.acked
    )
}

pub async fn run(opts: &ClientOpts, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    let ms = |d: Ms| d.0;
    match command {
        QueueCommand::Create {
            name,
            visibility,
            max_receives,
            dlq,
            retention,
            delay,
            dedup_window,
            max_body_bytes,
            fifo,
        } => {
            let config = pb::QueueConfig {
                visibility_ms: ms(visibility),
                max_receives,
                dead_letter_queue: dlq.unwrap_or_default(),
                retention_ms: ms(retention),
                max_body_bytes,
                delay_ms: ms(delay),
                dedup_window_ms: ms(dedup_window),
                fifo,
            };
            let reply = client.queue_create(name.clone(), config).await?;
            if opts.json {
                json(&reply);
            } else if reply.existed {
                println!("queue {name} exists with these settings");
            } else {
                println!("queue {name} created");
            }
        }
        QueueCommand::Send {
            name,
            body,
            delay,
            dedup_id,
            group,
            attributes,
        } => {
            let entry = |body: Vec<u8>| pb::QueueSendEntry {
                body,
                attributes: attributes.iter().cloned().collect(),
                delay_ms: delay.map(ms),
                dedup_id: dedup_id.clone().unwrap_or_default(),
                group: group.clone().unwrap_or_default(),
            };
            if body.is_none() && dedup_id.is_some() {
                anyhow::bail!(
                    "--dedup-id with bodies from stdin would make every line after the first a duplicate; give one BODY"
                );
            }
            let bodies: Vec<Vec<u8>> = match body {
                Some(body) => vec![body.into_bytes()],
                None => std::io::stdin()
                    .lock()
                    .lines()
                    .map(|line| line.map(String::into_bytes))
                    .collect::<Result<_, _>>()
                    .context("reading bodies from stdin")?,
            };
            for chunk in bodies.chunks(SEND_BATCH_MAX) {
                let results = client
                    .queue_send_batch(name.clone(), chunk.iter().cloned().map(entry).collect())
                    .await?;
                for r in results {
                    if opts.json {
                        json(&r);
                    } else if r.duplicate {
                        println!("{} (duplicate)", r.message_id);
                    } else {
                        println!("{}", r.message_id);
                    }
                }
            }
        }
        QueueCommand::Receive {
            name,
            max,
            wait,
            visibility,
            ack,
        } => {
            let reply = client
                .queue_receive_request(pb::QueueReceiveRequest {
                    queue: name,
                    max,
                    visibility_ms: visibility.map_or(0, ms),
                    wait_ms: ms(wait),
                    ack,
                })
                .await?;
            for failure in &reply.ack_failures {
                let why = failure.error.as_ref().map_or("", |e| e.message.as_str());
                eprintln!("could not ack {}: {why}", failure.receipt);
            }
            let messages = reply.messages;
            for m in &messages {
                if opts.json {
                    json(m);
                } else {
                    println!("{}\t{}", m.receipt, text(&m.body));
                }
            }
            if messages.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        QueueCommand::Ack { name, receipt } => {
            client.queue_ack(name, receipt.clone()).await?;
            if !opts.json {
                println!("acked {receipt}");
            }
        }
        QueueCommand::Nack {
            name,
            receipt,
            delay,
            reason,
        } => {
            let dead = client
                .queue_nack(name, receipt.clone(), delay.duration(), reason)
                .await?;
            if opts.json {
                println!("{}", serde_json::json!({ "dead_lettered": dead }));
            } else if dead {
                println!("nacked {receipt}: moved to the dead-letter queue");
            } else {
                println!("nacked {receipt}");
            }
        }
        QueueCommand::Stats { name } => {
            let info = client.queue_stats(name).await?;
            if opts.json {
                json(&info);
            } else {
                let s = info.stats.unwrap_or_default();
                let c = info.config.clone().unwrap_or_default();
                println!("queue:          {}", info.name);
                println!("visible:        {}", s.visible);
                println!("in flight:      {}", s.in_flight);
                println!("delayed:        {}", s.delayed);
                println!("dead letters:   {}", s.dead_letters);
                println!("sent:           {}", s.sent);
                println!("acked:          {}", s.acked);
                println!("dead-lettered:  {}", s.dead_lettered);
                println!("visibility:     {}ms", c.visibility_ms);
                println!("max receives:   {}", c.max_receives);
                println!(
                    "dlq:            {}",
                    if c.dead_letter_queue.is_empty() {
                        "none"
                    } else {
                        &c.dead_letter_queue
                    }
                );
                println!("fifo:           {}", c.fifo);
            }
        }
        QueueCommand::List => {
            let queues = client.queue_list().await?;
            for q in &queues {
                if opts.json {
                    json(q);
                } else {
                    println!("{}", info_line(q));
                }
            }
        }
        QueueCommand::Redrive { dlq, to, max } => {
            let moved = client.queue_redrive(dlq.clone(), to, max).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "moved": moved }));
            } else {
                println!("moved {moved} messages out of {dlq}");
            }
        }
        QueueCommand::Purge { name } => {
            let n = client.queue_purge(name.clone()).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "messages": n }));
            } else {
                println!("purged {n} messages from {name}");
            }
        }
        QueueCommand::Delete { name } => {
            let n = client.queue_delete(name.clone()).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "messages": n }));
            } else {
                println!("deleted queue {name} and its {n} messages");
            }
        }
        QueueCommand::Consume {
            name,
            concurrency,
            exit_when_idle,
            command,
        } => {
            return consume(
                client,
                name,
                concurrency,
                exit_when_idle.map(Ms::duration),
                command,
            )
            .await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn consume(
    client: plinth_client::Client,
    name: String,
    concurrency: usize,
    exit_when_idle: Option<Duration>,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let stop = crate::stop_signal();
    let command = std::sync::Arc::new(command);
    // When the last handler ended, and how many run: idle means none runs and none has ended
    // for the whole limit.
    let last_work = std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let options = ConsumerOptions {
        concurrency,
        wait: exit_when_idle
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(20)),
        ..ConsumerOptions::default()
    };
    let consumer = client.consume(name, options, {
        let last_work = last_work.clone();
        let running = running.clone();
        move |m: pb::QueueDelivery| {
            let command = command.clone();
            let last_work = last_work.clone();
            let running = running.clone();
            running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let outcome = run_one(&command, &m).await;
                *last_work.lock().expect("not poisoned") = tokio::time::Instant::now();
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                outcome
            }
        }
    });
    let watch_idle = async {
        let Some(limit) = exit_when_idle else {
            return std::future::pending::<()>().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let last = *last_work.lock().expect("not poisoned");
            if running.load(std::sync::atomic::Ordering::SeqCst) == 0 && last.elapsed() >= limit {
                return;
            }
        }
    };
    let failed = tokio::select! {
        _ = stop => None,
        _ = watch_idle => None,
        e = consumer.failed() => Some(e),
    };
    let stats = consumer.shutdown().await;
    eprintln!(
        "consumed: {} acked, {} nacked, {} stale",
        stats.acked, stats.nacked, stats.stale
    );
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Runs the command for one message; `Ok` on exit status 0.
async fn run_one(command: &[String], m: &pb::QueueDelivery) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("PLINTH_MESSAGE_ID", m.message_id.to_string())
        .env("PLINTH_RECEIPT", &m.receipt)
        .env("PLINTH_RECEIVE_COUNT", m.receive_count.to_string())
        .stdin(Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal stops the consumer, which lets the
        // command finish, rather than killing the command mid-message.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is not an error.
        let _ = stdin.write_all(&m.body).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for {:?}: {e}", command[0]))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} exited with {status}", command[0]))
    }
}
