//! `plinth kv ...`: put, get, range, del, txn, compact and watch.

use crate::ClientOpts;
use crate::output::{connect, event_line, json, text};
use plinth_client::{WatchOptions, pb};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum KvCommand {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long)]
        lease: Option<u64>,
        /// Write only while TOKEN holds this lock (a fenced write); STALE_TOKEN otherwise.
        #[arg(long, requires = "token")]
        fence: Option<String>,
        /// The fencing token for --fence.
        #[arg(long, requires = "fence")]
        token: Option<u64>,
    },
    /// Print KEY's value (exit status 1 if the key does not exist).
    Get {
        key: String,
        /// Read the local replica without a linearizable check.
        #[arg(long)]
        serializable: bool,
    },
    /// List every key starting with PREFIX, one `key<TAB>value` a line.
    Range {
        prefix: String,
        /// At most this many keys (0: the server's maximum).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[arg(long)]
        keys_only: bool,
    },
    /// Delete KEY (or every key starting with it, with --prefix).
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Run a transaction from a JSON file (or stdin): {"compares": [...], "success": [...], "failure": [...]}.
    Txn {
        /// The file; stdin when absent or "-".
        file: Option<PathBuf>,
    },
    /// Drop watch history up to and including REVISION.
    Compact { revision: u64 },
    /// Print every change to keys starting with PREFIX, one event a line, until interrupted.
    Watch {
        prefix: String,
        /// Start after this revision (0: replay all history) instead of from now.
        #[arg(long)]
        from_revision: Option<u64>,
    },
}

pub async fn run(opts: &ClientOpts, command: KvCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        KvCommand::Put {
            key,
            value,
            lease,
            fence: Some(lock),
            token: Some(token),
        } => {
            let put = pb::PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease: lease.unwrap_or(0),
            };
            let ops = vec![pb::RequestOp {
                request: Some(pb::request_op::Request::Put(put)),
            }];
            let reply = client.txn_fenced(lock, token, ops).await?;
            if opts.json {
                json(&reply);
            } else {
                println!(
                    "OK (revision {})",
                    reply.header.unwrap_or_default().revision
                );
            }
        }
        KvCommand::Put {
            key, value, lease, ..
        } => {
            let reply = client
                .put_with_lease(key, value, lease.unwrap_or(0))
                .await?;
            if opts.json {
                json(&reply);
            } else {
                println!(
                    "OK (revision {})",
                    reply.header.unwrap_or_default().revision
                );
            }
        }
        KvCommand::Get { key, serializable } => {
            let reply = client
                .get_request(pb::GetRequest {
                    key: key.clone().into_bytes(),
                    serializable,
                })
                .await?;
            if opts.json {
                json(&reply);
            }
            match reply.kv {
                Some(kv) if !opts.json => println!("{}", text(&kv.value)),
                Some(_) => {}
                None => {
                    if !opts.json {
                        eprintln!("key not found: {key}");
                    }
                    return Ok(ExitCode::from(1));
                }
            }
        }
        KvCommand::Range {
            prefix,
            limit,
            keys_only,
        } => {
            let request = pb::RangeRequest {
                key: prefix.into_bytes(),
                prefix: true,
                limit,
                keys_only,
                ..Default::default()
            };
            let reply = client.range(request).await?;
            if opts.json {
                json(&reply);
            } else {
                for kv in &reply.kvs {
                    if keys_only {
                        println!("{}", text(&kv.key));
                    } else {
                        println!("{}\t{}", text(&kv.key), text(&kv.value));
                    }
                }
                if reply.more {
                    eprintln!("({} keys match; {} shown)", reply.count, reply.kvs.len());
                }
            }
        }
        KvCommand::Del { key, prefix } => {
            let reply = client
                .delete_request(pb::DeleteRequest {
                    key: key.into_bytes(),
                    prefix,
                    ..Default::default()
                })
                .await?;
            if opts.json {
                json(&reply);
            } else {
                println!("{}", reply.deleted);
            }
        }
        KvCommand::Txn { file } => {
            let body = match file {
                Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                _ => {
                    let mut body = String::new();
                    std::io::stdin().read_to_string(&mut body)?;
                    body
                }
            };
            let request: pb::TxnRequest = plinth_proto::json::decode_text(body.as_bytes())
                .map_err(|e| {
                    anyhow::anyhow!("the txn is not {{compares, success, failure}} as JSON: {e}")
                })?;
            let reply = client.txn(request).await?;
            if opts.json {
                json(&reply);
            } else {
                println!(
                    "{}",
                    if reply.succeeded {
                        "SUCCESS"
                    } else {
                        "FAILURE"
                    }
                );
                for response in &reply.responses {
                    print_op(response);
                }
            }
        }
        KvCommand::Compact { revision } => {
            let reply = client.compact(revision).await?;
            if opts.json {
                json(&reply);
            } else {
                println!("compacted up to revision {}", reply.compacted_revision);
            }
        }
        KvCommand::Watch {
            prefix,
            from_revision,
        } => {
            let mut options = WatchOptions::prefix(prefix);
            options.from_revision = from_revision;
            let mut watch = client.watch(options).await?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    next = watch.next() => match next {
                        Some(Ok(event)) if opts.json => json(&event),
                        Some(Ok(event)) => println!("{}", event_line(&event)),
                        Some(Err(e)) => return Err(e.into()),
                        None => break,
                    },
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_op(response: &pb::ResponseOp) {
    use pb::response_op::Response;
    match &response.response {
        Some(Response::Put(_)) => println!("OK"),
        Some(Response::Delete(d)) => println!("{}", d.deleted),
        Some(Response::Range(r)) => {
            for kv in &r.kvs {
                println!("{}\t{}", text(&kv.key), text(&kv.value));
            }
        }
        None => {}
    }
}
