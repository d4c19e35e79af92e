//! State: every primitive plus the log clock and the global revision; the one `apply`.

use crate::config::{ConfigCommand, ConfigError, ConfigOutput, ConfigState};
use crate::kv::{KvCommand, KvError, KvOutput, KvState};
use crate::lease::{LeaseCommand, LeaseError, LeaseOutput, LeaseState};
use crate::limits::COMMAND_BYTES_MAX;
use crate::lock::{LockCommand, LockError, LockOutput, LockState};
use crate::queue::{QueueCommand, QueueError, QueueOutput, QueueState};
use crate::registry::{RegistryCommand, RegistryError, RegistryOutput, RegistryState};
use crate::schedule::{ScheduleCommand, ScheduleError, ScheduleOutput, ScheduleState};
use crate::{ErrorCode, LeaseId, Millis, Revision, Wake};
use crate::{lease, lock};
use serde::{Deserialize, Serialize};

/// One entry of the replicated log: a command and the leader's wall clock when it proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub stamp: Millis,
    pub command: Command,
}

/// Every command of every primitive. Variants are only ever appended: the log and snapshots
/// encode them by position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Advances the log clock; leases (and later visibility timeouts, claims, schedules) due by
    /// then expire in this apply.
    Tick,
    Kv(KvCommand),
    Lease(LeaseCommand),
    Lock(LockCommand),
    Queue(QueueCommand),
    Schedule(ScheduleCommand),
    Config(ConfigCommand),
    Registry(RegistryCommand),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Tick { expired: Vec<LeaseId> },
    Kv(KvOutput),
    Lease(LeaseOutput),
    Lock(LockOutput),
    Queue(QueueOutput),
    Schedule(ScheduleOutput),
    Config(ConfigOutput),
    Registry(RegistryOutput),
}

/// A refusal by the state machine: deterministic, the same on every replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The command as a whole is over the size of one log entry, whatever its parts.
    #[error(
        "the request is {bytes} bytes as a command; a command is at most {COMMAND_BYTES_MAX} bytes, so send its parts in several requests"
    )]
    TooLarge { bytes: usize },
}

impl StateError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StateError::Kv(e) => e.code(),
            StateError::Lease(e) => e.code(),
            StateError::Lock(e) => e.code(),
            StateError::Queue(e) => e.code(),
            StateError::Schedule(e) => e.code(),
            StateError::Config(e) => e.code(),
            StateError::Registry(e) => e.code(),
            StateError::TooLarge { .. } => ErrorCode::InvalidArgument,
        }
    }

    pub fn field(&self) -> &'static str {
        match self {
            StateError::Kv(e) => e.field(),
            StateError::Lease(e) => e.field(),
            StateError::Lock(e) => e.field(),
            StateError::Queue(e) => e.field(),
            StateError::Schedule(e) => e.field(),
            StateError::Config(e) => e.field(),
            StateError::Registry(e) => e.field(),
            StateError::TooLarge { .. } => "request",
        }
    }
}

/// What one apply produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The revision after the apply: the command's own revision if it changed state.
    pub revision: Revision,
    pub result: Result<Output, StateError>,
    /// KV events for watchers, in order, all at `revision`.
    pub events: Vec<crate::kv::Event>,
    /// Who waits on something this apply changed, each once, in order.
    pub woken: Vec<Wake>,
}

/// What a primitive's apply needs to know and may report: the revision the command will get if
/// it changes anything, the log clock, and the events it produced.
pub struct Ctx {
    pub revision: Revision,
    pub clock: Millis,
    pub changed: bool,
    pub events: Vec<crate::kv::Event>,
    woken: Vec<Wake>,
}

impl Ctx {
    /// Tells whoever waits on `wake` that its state may have changed.
    pub fn wake(&mut self, wake: Wake) {
        self.woken.push(wake);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not start with the plinth snapshot header")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported; this build reads version {SNAPSHOT_VERSION}"
    )]
    UnsupportedVersion { found: u32 },
    #[error("snapshot body does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"PLNS";
/// Version 3 added config and the registry, version 2 locks, queues and schedules; snapshots of
/// versions 1 and 2 still load.
const SNAPSHOT_VERSION: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    revision: Revision,
    /// The log clock: the largest stamp applied so far.
    clock: Millis,
    kv: KvState,
    leases: LeaseState,
    locks: LockState,
    queues: QueueState,
    schedules: ScheduleState,
    config: ConfigState,
    registry: RegistryState,
}

/// The state as snapshot version 2 encoded it.
#[derive(Deserialize)]
struct StateV2 {
    revision: Revision,
    clock: Millis,
    kv: KvState,
    leases: LeaseState,
    locks: LockState,
    queues: QueueState,
    schedules: ScheduleState,
}

/// The state as snapshot version 1 encoded it.
#[derive(Deserialize)]
struct StateV1 {
    revision: Revision,
    clock: Millis,
    kv: KvState,
    leases: LeaseState,
}

impl State {
    /// Checks a command's shape against the limits without applying it. The server calls this
    /// before proposing; `apply` checks again, so a command that slips through is refused, never
    /// half-applied.
    pub fn validate(command: &Command) -> Result<(), StateError> {
        let bytes = encoded_bytes(command);
        if bytes > COMMAND_BYTES_MAX {
            return Err(StateError::TooLarge { bytes });
        }
        match command {
            Command::Tick => Ok(()),
            Command::Kv(c) => Ok(KvState::validate(c)?),
            Command::Lease(LeaseCommand::Grant(lease::Grant { ttl_ms, .. })) => {
                Ok(crate::lease::check_ttl(*ttl_ms)?)
            }
            Command::Lease(_) => Ok(()),
            Command::Lock(c) => Ok(LockState::validate(c)?),
            Command::Queue(c) => Ok(QueueState::validate(c)?),
            Command::Schedule(c) => Ok(ScheduleState::validate(c)?),
            Command::Config(c) => Ok(ConfigState::validate(c)?),
            Command::Registry(c) => Ok(RegistryState::validate(c)?),
        }
    }

    pub fn apply(&mut self, request: &Request) -> Applied {
        let before = self.clock;
        self.clock = self.clock.max(request.stamp);
        let mut ctx = Ctx {
            revision: Revision(self.revision.0 + 1),
            clock: self.clock,
            changed: false,
            events: Vec::new(),
            woken: Vec::new(),
        };
        let result = self.dispatch(&request.command, &mut ctx);
        if self.schedules.became_runnable(before, self.clock) {
            ctx.wake(Wake::Schedules);
        }
        if ctx.changed {
            self.revision = ctx.revision;
        }
        self.kv.trim_history(self.clock);
        let mut woken = ctx.woken;
        woken.sort_unstable();
        woken.dedup();
        Applied {
            revision: self.revision,
            result,
            events: ctx.events,
            woken,
        }
    }

    fn dispatch(&mut self, command: &Command, ctx: &mut Ctx) -> Result<Output, StateError> {
        match command {
            Command::Tick => {
                // Waiters whose deadline passed give up before any permit is handed on.
                ctx.changed |= self.locks.expire_waiters(ctx) > 0;
                ctx.changed |= self.queues.tick(ctx);
                ctx.changed |= self.schedules.tick(ctx.clock);
                // A tick comes when something is due, a run's retry among them: a run may be
                // claimable now even if nothing changed state.
                ctx.wake(Wake::Schedules);
                let expired = self.leases.expire(ctx.clock);
                for id in &expired {
                    self.release_lease(*id, ctx);
                }
                ctx.changed |= !expired.is_empty();
                Ok(Output::Tick { expired })
            }
            Command::Kv(c) => Ok(Output::Kv(self.kv.apply(
                c,
                &self.leases,
                &self.locks,
                ctx,
            )?)),
            Command::Lease(c) => {
                let out = self.leases.apply(c, ctx.clock)?;
                if let LeaseOutput::Revoked { id } = out {
                    self.release_lease(id, ctx);
                }
                // A refresh with no lease alive changes nothing, so it takes no revision.
                ctx.changed |= !matches!(out, LeaseOutput::Refreshed { leases: 0 });
                Ok(Output::Lease(out))
            }
            Command::Lock(c) => {
                let (out, ended) = self.locks.apply(c, &mut self.leases, ctx)?;
                if let Some(lease) = ended {
                    self.end_lease(lease, ctx);
                }
                // Every lock command that succeeds changes state, except abandoning the waiters
                // of a node that had none.
                ctx.changed |= !matches!(out, LockOutput::AbandonedNode { waiters: 0 });
                Ok(Output::Lock(out))
            }
            Command::Queue(c) => Ok(Output::Queue(self.queues.apply(c, ctx)?)),
            Command::Schedule(c) => Ok(Output::Schedule(self.schedules.apply(c, ctx)?)),
            Command::Config(c) => Ok(Output::Config(self.config.apply(c, ctx)?)),
            Command::Registry(c) => {
                let (out, ended) = self.registry.apply(c, &mut self.leases, ctx)?;
                if let Some(lease) = ended {
                    self.end_lease(lease, ctx);
                }
                Ok(Output::Registry(out))
            }
        }
    }

    /// Ends a lease a primitive let go of (a lock released, a registration replaced): revokes it
    /// and releases what else is attached to it, in this revision.
    fn end_lease(&mut self, lease: LeaseId, ctx: &mut Ctx) {
        self.leases
            .apply(
                &LeaseCommand::Revoke(lease::Revoke { id: lease }),
                ctx.clock,
            )
            .expect("a primitive's lease is alive until it lets go");
        self.release_lease(lease, ctx);
    }

    /// The one place where a lease's end reaches the resources attached to it.
    fn release_lease(&mut self, id: LeaseId, ctx: &mut Ctx) {
        self.kv.release_lease(id, ctx);
        self.locks.release_lease(id, &mut self.leases, ctx);
        self.registry.release_lease(id, ctx);
    }

    /// What a node owes the state when it starts to lead, once it has applied every committed
    /// entry: the commands to propose, in order.
    ///
    /// - The lock waits no call can be waiting for any more leave their queues, since a grant to
    ///   nobody would block the lock for a whole ttl: every wait queued by another node (a wait
    ///   is queued by the node that served the acquire; those calls died with it, or were cut
    ///   when its forwarded connections broke, and their clients ask again here), and, the first
    ///   time `node`'s process leads (`first_term`), the waits its previous process queued.
    /// - Every lease deadline moves to at least `clock + ttl`, so that a leader whose clock runs
    ///   ahead never expires a lease earlier than the old leader would have. With no lease alive
    ///   there is nothing to refresh, and an idle restart writes nothing.
    pub fn leadership_duties(&self, node: u64, first_term: bool) -> Vec<Command> {
        let abandon = self
            .locks
            .waiters_by_node()
            .into_keys()
            .filter(|owner| *owner != node || first_term)
            .map(|owner| lock::AbandonNode { node: owner }.into());
        let refresh = (!self.leases.is_empty()).then(|| lease::Refresh.into());
        abandon.chain(refresh).collect()
    }

    /// The earliest point on the log clock at which a `Tick` has work: a lease's or a lock
    /// waiter's deadline, a queue's delay, visibility, retention or dedup window ending, or a
    /// schedule's fire time, claim lease or retry.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.leases.next_deadline(),
            self.locks.next_deadline(),
            self.queues.next_deadline(),
            self.schedules.next_deadline(self.clock),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves the clock as applying a command stamped `stamp` would, and nothing else: tests use
    /// it to say what a refused command must leave behind.
    #[cfg(test)]
    pub(crate) fn advance_clock(&mut self, stamp: Millis) {
        self.clock = self.clock.max(stamp);
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn clock(&self) -> Millis {
        self.clock
    }

    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    pub fn leases(&self) -> &LeaseState {
        &self.leases
    }

    pub fn locks(&self) -> &LockState {
        &self.locks
    }

    pub fn queues(&self) -> &QueueState {
        &self.queues
    }

    pub fn schedules(&self) -> &ScheduleState {
        &self.schedules
    }

    pub fn config(&self) -> &ConfigState {
        &self.config
    }

    pub fn registry(&self) -> &RegistryState {
        &self.registry
    }

    /// Recomputes every primitive's invariants from its primary data; panics naming the rule.
    pub fn check_invariants(&self) {
        self.kv.check_invariants(self.revision, &self.leases);
        self.leases.check_invariants();
        self.locks.check_invariants(&self.leases);
        self.queues.check_invariants();
        self.schedules.check_invariants();
        self.config.check_invariants();
        self.registry.check_invariants(&self.leases);
    }

    /// The snapshot encoding: a magic, a format version, then the postcard body. Deterministic:
    /// equal states give equal bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_snapshot(&mut out);
        out
    }

    /// [`State::to_snapshot`] at the end of `out`: a caller that reserves about the last
    /// snapshot's size spares the buffer its doublings.
    pub fn append_snapshot(&self, out: &mut Vec<u8>) {
        let written: Result<(), std::convert::Infallible> = self.write_snapshot(|chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        });
        written.unwrap_or_else(|never| match never {});
    }

    /// [`State::to_snapshot`] handed to `sink` in chunks as it is encoded, so that a large state
    /// can go to a file without its whole encoding in memory beside it. The sink does any I/O;
    /// its first error ends the encoding and is returned.
    pub fn write_snapshot<E>(&self, sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut error = None;
        let mut chunks = crate::codec::Chunks::new(sink, &mut error);
        let encoded = chunks
            .take(SNAPSHOT_MAGIC)
            .and_then(|()| chunks.take(&SNAPSHOT_VERSION.to_le_bytes()))
            .and_then(|()| postcard::serialize_with_flavor(self, chunks));
        match (encoded, error) {
            (_, Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
            // Only the sink can stop the encoding of a state: every map and sequence in it has
            // a known length.
            (Err(e), None) => panic!("a state always encodes: {e}"),
        }
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        match version {
            SNAPSHOT_VERSION => Ok(postcard::from_bytes(&bytes[8..])?),
            2 => {
                let v2: StateV2 = postcard::from_bytes(&bytes[8..])?;
                Ok(State {
                    revision: v2.revision,
                    clock: v2.clock,
                    kv: v2.kv,
                    leases: v2.leases,
                    locks: v2.locks,
                    queues: v2.queues,
                    schedules: v2.schedules,
                    config: ConfigState::default(),
                    registry: RegistryState::default(),
                })
            }
            1 => {
                let v1: StateV1 = postcard::from_bytes(&bytes[8..])?;
                Ok(State {
                    revision: v1.revision,
                    clock: v1.clock,
                    kv: v1.kv,
                    leases: v1.leases,
                    locks: LockState::default(),
                    queues: QueueState::default(),
                    schedules: ScheduleState::default(),
                    config: ConfigState::default(),
                    registry: RegistryState::default(),
                })
            }
            found => Err(SnapshotError::UnsupportedVersion { found }),
        }
    }
}

/// The bytes `command` takes in the log, counted without encoding it.
fn encoded_bytes(command: &Command) -> usize {
    postcard::serialize_with_flavor(command, postcard::ser_flavors::Size::default())
        .expect("a command always encodes")
}
