//! plinth's deterministic state machine: every primitive's state, commands, rules and invariants.
//!
//! Architecture invariant: nothing here reads a clock, draws a random number, touches a file or a
//! socket, or depends on tokio. Time enters only as the `stamp_ms` of a [`Request`], stamped by the
//! leader; the state's clock is `max(previous, stamp)`. The same log applied to two fresh states
//! therefore yields byte-identical snapshots on every replica.
//!
//! The shape: [`State::apply`] takes one committed [`Request`] and returns an [`Applied`] (the
//! outcome plus the [`Event`]s to hand to watchers). Reads are plain queries on `&State`.

mod call;
mod codec;
pub mod config;
pub mod kv;
pub mod lease;
pub mod limits;
pub mod lock;
pub mod names;
pub mod queue;
pub mod registry;
pub mod schedule;
mod state;
#[cfg(test)]
mod tests;
mod types;
mod wake;

pub use call::Call;
pub use state::{Applied, Command, Ctx, Output, Request, SnapshotError, State, StateError};
pub use types::{ErrorCode, FencingToken, LeaseId, Millis, Revision};
pub use wake::Wake;
