//! `plinth registry ...`: register (in the foreground, heartbeating), list, watch, status,
//! deregister and services.

use crate::output::{connect, json};
use crate::{ClientOpts, Ms, ms_within};
use anyhow::bail;
use plinth_client::{RegisterOptions, pb};
use plinth_proto::limits;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum RegistryCommand {
    /// Register INSTANCE of SERVICE at ADDRESS and keep it registered, heartbeating, until
    /// interrupted (SIGINT or SIGTERM), then deregister it.
    Register {
        service: String,
        instance: String,
        address: String,
        /// The instance leaves this long after its last heartbeat (500ms to 7 days).
        #[arg(long, default_value_t = Ms(limits::REGISTRY_TTL_MS_DEFAULT), value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Ms,
        /// Metadata as KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// passing, warning or draining.
        #[arg(long, default_value = "passing")]
        status: String,
    },
    /// List SERVICE's live instances: passing and warning ones, with --all the draining too.
    List {
        service: String,
        #[arg(long)]
        all: bool,
    },
    /// Print SERVICE's instances, then every change, until interrupted.
    Watch { service: String },
    /// Set an instance's status (passing, warning or draining), as an operator.
    Status {
        service: String,
        instance: String,
        status: String,
    },
    /// Remove an instance now, as an operator.
    Deregister { service: String, instance: String },
    /// List the services that have instances.
    Services,
}

fn instance_line(i: &pb::RegistryInstance) -> String {
    let meta: Vec<String> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}\t{}\t{}\t{}",
        i.instance,
        i.address,
        i.status,
        meta.join(",")
    )
}

pub async fn run(opts: &ClientOpts, command: RegistryCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        RegistryCommand::Register {
            service,
            instance,
            address,
            ttl,
            meta,
            status,
        } => {
            let mut options = RegisterOptions::new(service, instance, address)
                .ttl(ttl.duration())
                .status(status);
            for pair in &meta {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("--meta {pair:?} is not KEY=VALUE");
                };
                options = options.meta(key, value);
            }
            // Listen before registering, so a signal that comes at once still deregisters.
            let stop = crate::stop_signal();
            let mut registration = client.register(options).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "lease": registration.lease() }));
            } else {
                println!("{}", registration.lease());
            }
            let replaced = tokio::select! {
                _ = stop => false,
                _ = registration.replaced() => true,
            };
            if replaced {
                eprintln!("another process registered the same instance; this one has stopped");
                return Ok(ExitCode::FAILURE);
            }
            registration.deregister().await?;
        }
        RegistryCommand::List { service, all } => {
            for instance in client.registry_resolve(service, all).await? {
                if opts.json {
                    json(&instance);
                } else {
                    println!("{}", instance_line(&instance));
                }
            }
        }
        RegistryCommand::Watch { service } => {
            let mut stream = client.registry_watch(service, 0).await?;
            let stop = crate::stop_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    message = stream.message() => match message? {
                        Some(message) if opts.json => json(&message),
                        Some(message) => {
                            for i in &message.instances {
                                println!("{}\t= {}", message.revision, instance_line(i));
                            }
                            for e in &message.events {
                                let i = e.instance.clone().unwrap_or_default();
                                match e.r#type.as_str() {
                                    "down" => println!("{}\t- {}\t{}", e.revision, i.instance, e.reason),
                                    _ => println!("{}\t+ {}", e.revision, instance_line(&i)),
                                }
                            }
                        }
                        None => bail!("the server ended the watch (it is shutting down)"),
                    },
                }
            }
        }
        RegistryCommand::Status {
            service,
            instance,
            status,
        } => {
            let i = client
                .registry_set_status(service, instance, 0, status)
                .await?;
            if opts.json {
                json(&i);
            } else {
                println!("{}", instance_line(&i));
            }
        }
        RegistryCommand::Deregister { service, instance } => {
            client.registry_deregister(service, instance, 0).await?;
        }
        RegistryCommand::Services => {
            for s in client.registry_services().await? {
                if opts.json {
                    json(&s);
                } else {
                    println!("{}\t{} instances", s.service, s.instances);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
