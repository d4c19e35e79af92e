//! `plinth lease ...`: grant, keepalive, revoke, ttl and list.

use crate::output::{connect, json, text};
use crate::{ClientOpts, Ms, ms_within};
use plinth_proto::limits;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with this time-to-live (500ms to 7 days) and print its id.
    Grant {
        #[arg(value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Ms,
    },
    /// Keep a lease alive until interrupted.
    Keepalive { id: u64 },
    /// End a lease now, deleting its keys.
    Revoke { id: u64 },
    /// Show a lease's time left.
    Ttl {
        id: u64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List the live leases.
    List,
}

pub async fn run(opts: &ClientOpts, command: LeaseCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        LeaseCommand::Grant { ttl } => {
            let lease = client.lease_grant(ttl.duration()).await?;
            if opts.json {
                json(&lease);
            } else {
                println!("{}", lease.id);
            }
        }
        LeaseCommand::Keepalive { id } => {
            let first = client.lease_keep_alive(id).await?;
            let period = Duration::from_millis((first.ttl_ms / 3).max(50));
            loop {
                let lease = client.lease_keep_alive(id).await?;
                if opts.json {
                    json(&lease);
                } else {
                    println!("lease {} kept alive; ttl {}ms", lease.id, lease.ttl_ms);
                }
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tokio::time::sleep(period) => {}
                }
            }
        }
        LeaseCommand::Revoke { id } => {
            let reply = client.lease_revoke(id).await?;
            if opts.json {
                json(&reply);
            } else {
                println!("lease {id} revoked");
            }
        }
        LeaseCommand::Ttl { id, keys } => {
            let reply = client.lease_time_to_live(id, keys).await?;
            if opts.json {
                json(&reply);
            } else {
                let lease = reply.lease.unwrap_or_default();
                println!(
                    "lease {} has {}ms left of {}ms",
                    lease.id, lease.remaining_ms, lease.ttl_ms
                );
                for key in &reply.keys {
                    println!("{}", text(key));
                }
            }
        }
        LeaseCommand::List => {
            let leases = client.lease_list().await?;
            if opts.json {
                json(&plinth_client::pb::LeaseListResponse {
                    header: None,
                    leases,
                });
            } else {
                for lease in leases {
                    println!(
                        "{}\tttl {}ms\t{}ms left",
                        lease.id, lease.ttl_ms, lease.remaining_ms
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
