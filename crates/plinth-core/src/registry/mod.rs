//! A registry of live service instances, each tied to a lease, with a watchable history.
//!
//! Contract: `Register(service, instance, address, metadata, ttl, status)` lists the instance
//! under a fresh lease of `ttl` and answers the lease; registering an instance id again replaces
//! the old registration (its lease is revoked in the same revision), so a process that restarts
//! takes its id back. `Heartbeat` keeps the lease alive; `SetStatus` moves the instance between
//! passing, warning and draining; `Deregister` removes it. Heartbeat, SetStatus and Deregister take
//! the registration's lease as its fencing token: a process whose registration was replaced gets
//! `STALE_TOKEN` and changes nothing. SetStatus and Deregister without a lease are an operator's
//! override. An instance is listed only while its lease is alive: it leaves in the same revision
//! as the lease expires or is revoked, and is hidden from `Resolve` from the moment its deadline
//! passes. `Resolve(service)` answers the passing and warning instances (warning is degraded, not
//! down, as Consul's DNS treats it); with `all`, the draining ones too. Every change — an
//! instance up or changed, or down — is an event at its revision, kept in a bounded history so a
//! watcher resumes from the last revision it saw, or is told `COMPACTED` (some of that service's
//! events since are gone) and resolves again.
//!
//! Invariants:
//! - RG1: every instance's lease is alive, and the lease index maps exactly the instances' leases.
//! - RG2: each service's events are in revision order (one revision may hold several), all
//!   above that service's compacted revision; the history index lists exactly every event, in
//!   revision order, and holds at most `REGISTRY_HISTORY_EVENTS_MAX`, trimmed a whole revision
//!   at a time.
//! - RG3: every instance is within the limits on addresses and metadata.
//! - RG4: a service with no instance and no event is not kept.
//! - RG5: replaying a service's events onto an empty list gives its instances (a watcher that
//!   saw every event agrees with `Resolve`), unless history before them was compacted.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    Deregister, DownReason, Heartbeat, HeartbeatOk, InstanceInfo, Register, RegistryCommand,
    RegistryEvent, RegistryEventKind, RegistryOutput, SetStatus, Status,
};
pub use error::RegistryError;
pub use state::RegistryState;
