//! LockState: every lock in use, its holders and its queue; apply and queries.

use super::{HoldInfo, LockCommand, LockError, LockInfo, LockOutput, TicketStatus, WaiterInfo};
use crate::lease;
use crate::lease::{LeaseCommand, LeaseOutput, LeaseState, check_ttl};
use crate::limits::{
    ELECTION_VALUE_BYTES_MAX, LOCK_PERMITS_MAX, LOCK_WAIT_MS_MAX, LOCK_WAITERS_MAX, LOCKS_MAX,
    OWNER_BYTES_MAX,
};
use crate::lock;
use crate::names::check_name;
use crate::{Ctx, FencingToken, LeaseId, Millis, Revision, Wake};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    owner: String,
    lease: LeaseId,
    ticket: Revision,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    ticket: Revision,
    node: u64,
    owner: String,
    ttl_ms: u64,
    deadline: Millis,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    permits: u32,
    holders: BTreeMap<FencingToken, Holder>,
    waiters: VecDeque<Waiter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    locks: BTreeMap<String, Lock>,
    /// The hold each lock lease carries: a lease's end finds its hold here.
    by_lease: BTreeMap<LeaseId, (String, FencingToken)>,
    /// (deadline, name, ticket) of every waiter: a tick walks it from the front.
    by_deadline: BTreeSet<(Millis, String, Revision)>,
    /// The last token handed out; the next is above it.
    last_token: FencingToken,
}

impl LockState {
    /// Checks a command's shape against the limits without looking at the data.
    pub fn validate(command: &LockCommand) -> Result<(), LockError> {
        match command {
            LockCommand::Acquire(lock::Acquire {
                name,
                owner,
                ttl_ms,
                wait_ms,
                permits,
                value,
                ..
            }) => {
                check_name(name).map_err(LockError::Name)?;
                if owner.is_empty() || owner.len() > OWNER_BYTES_MAX {
                    return Err(LockError::Owner { bytes: owner.len() });
                }
                check_ttl(*ttl_ms).map_err(LockError::Ttl)?;
                if *wait_ms > LOCK_WAIT_MS_MAX {
                    return Err(LockError::WaitTooLong { wait_ms: *wait_ms });
                }
                if *permits == 0 || *permits > LOCK_PERMITS_MAX {
                    return Err(LockError::Permits { permits: *permits });
                }
                check_value(value)
            }
            LockCommand::Renew(lock::Renew { name, ttl_ms, .. }) => {
                check_name(name).map_err(LockError::Name)?;
                match ttl_ms {
                    Some(ttl_ms) => check_ttl(*ttl_ms).map_err(LockError::Ttl),
                    None => Ok(()),
                }
            }
            LockCommand::Proclaim(lock::Proclaim { name, value, .. }) => {
                check_name(name).map_err(LockError::Name)?;
                check_value(value)
            }
            LockCommand::Release(lock::Release { name, .. })
            | LockCommand::Abandon(lock::Abandon { name, .. }) => {
                check_name(name).map_err(LockError::Name)
            }
            LockCommand::AbandonNode(lock::AbandonNode { .. }) => Ok(()),
        }
    }

    /// Applies a command. A returned lease must be ended by the caller in this same revision
    /// (revoked, then released through `State::release_lease`), which also ends the hold on it.
    pub fn apply(
        &mut self,
        command: &LockCommand,
        leases: &mut LeaseState,
        ctx: &mut Ctx,
    ) -> Result<(LockOutput, Option<LeaseId>), LockError> {
        Self::validate(command)?;
        match command {
            LockCommand::Acquire(lock::Acquire {
                name,
                owner,
                ttl_ms,
                wait_ms,
                permits,
                value,
                node,
            }) => self
                .acquire(
                    name, owner, *ttl_ms, *wait_ms, *permits, value, *node, leases, ctx,
                )
                .map(|out| (out, None)),
            LockCommand::Renew(lock::Renew {
                name,
                token,
                ttl_ms,
            }) => {
                let lease = self.holder(name, *token, leases, ctx.clock)?.lease;
                leases
                    .renew(lease, *ttl_ms, ctx.clock)
                    .map_err(LockError::Lease)?;
                ctx.changed = true;
                let info = self.hold_info(name, *token, leases, ctx.clock);
                Ok((LockOutput::Renewed(info), None))
            }
            LockCommand::Release(lock::Release { name, token }) => {
                let lease = self.holder(name, *token, leases, ctx.clock)?.lease;
                Ok((LockOutput::Released { token: *token }, Some(lease)))
            }
            LockCommand::Proclaim(lock::Proclaim { name, token, value }) => {
                self.holder(name, *token, leases, ctx.clock)?;
                let lock = self.locks.get_mut(name).expect("holder found");
                lock.holders.get_mut(token).expect("holder found").value = value.clone();
                ctx.changed = true;
                ctx.wake(Wake::Lock(name.clone()));
                let info = self.hold_info(name, *token, leases, ctx.clock);
                Ok((LockOutput::Proclaimed(info), None))
            }
            LockCommand::Abandon(lock::Abandon { name, ticket }) => {
                let not_found = || LockError::TicketNotFound {
                    name: name.clone(),
                    ticket: *ticket,
                };
                let lock = self.locks.get_mut(name).ok_or_else(not_found)?;
                if let Some(at) = lock.waiters.iter().position(|w| w.ticket == *ticket) {
                    let waiter = lock.waiters.remove(at).expect("position is in range");
                    self.by_deadline
                        .remove(&(waiter.deadline, name.clone(), *ticket));
                    self.forget_if_unused(name);
                    ctx.changed = true;
                    ctx.wake(Wake::Lock(name.clone()));
                    let out = LockOutput::Abandoned {
                        ticket: *ticket,
                        released: None,
                    };
                    return Ok((out, None));
                }
                let (token, holder) = lock
                    .holders
                    .iter()
                    .find(|(_, h)| h.ticket == *ticket)
                    .ok_or_else(not_found)?;
                let out = LockOutput::Abandoned {
                    ticket: *ticket,
                    released: Some(*token),
                };
                Ok((out, Some(holder.lease)))
            }
            LockCommand::AbandonNode(lock::AbandonNode { node }) => {
                let orphans: Vec<(Millis, String, Revision)> = self
                    .locks
                    .iter()
                    .flat_map(|(name, lock)| {
                        lock.waiters
                            .iter()
                            .filter(|w| w.node == *node)
                            .map(|w| (w.deadline, name.clone(), w.ticket))
                    })
                    .collect();
                for (deadline, name, ticket) in &orphans {
                    self.by_deadline.remove(&(*deadline, name.clone(), *ticket));
                    let lock = self.locks.get_mut(name).expect("listed above");
                    lock.waiters.retain(|w| w.ticket != *ticket);
                    self.forget_if_unused(name);
                    ctx.wake(Wake::Lock(name.clone()));
                }
                ctx.changed |= !orphans.is_empty();
                let out = LockOutput::AbandonedNode {
                    waiters: orphans.len() as u64,
                };
                Ok((out, None))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        name: &str,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
        permits: u32,
        value: &[u8],
        node: u64,
        leases: &mut LeaseState,
        ctx: &mut Ctx,
    ) -> Result<LockOutput, LockError> {
        let ticket = ctx.revision;
        match self.locks.get(name) {
            None => {
                if self.locks.len() >= LOCKS_MAX {
                    return Err(LockError::TooManyLocks);
                }
                leases.check_room().map_err(LockError::Lease)?;
                self.locks.insert(
                    name.to_owned(),
                    Lock {
                        permits,
                        holders: BTreeMap::new(),
                        waiters: VecDeque::new(),
                    },
                );
            }
            Some(lock) if lock.permits != permits => {
                return Err(LockError::PermitsMismatch {
                    name: name.to_owned(),
                    permits: lock.permits,
                    asked: permits,
                });
            }
            Some(lock) if lock.holders.len() < permits as usize => {
                leases.check_room().map_err(LockError::Lease)?;
            }
            Some(lock) => {
                if wait_ms == 0 {
                    let (token, newest) = lock.holders.last_key_value().expect("permits taken");
                    return Err(LockError::Held {
                        name: name.to_owned(),
                        holders: lock.holders.len() as u32,
                        permits: lock.permits,
                        owner: newest.owner.clone(),
                        token: *token,
                    });
                }
                if lock.waiters.len() >= LOCK_WAITERS_MAX {
                    return Err(LockError::TooManyWaiters {
                        name: name.to_owned(),
                    });
                }
                let deadline = Millis(ctx.clock.0.saturating_add(wait_ms));
                let position = lock.waiters.len() as u64;
                let lock = self.locks.get_mut(name).expect("looked up above");
                lock.waiters.push_back(Waiter {
                    ticket,
                    node,
                    owner: owner.to_owned(),
                    ttl_ms,
                    deadline,
                    value: value.to_vec(),
                });
                self.by_deadline.insert((deadline, name.to_owned(), ticket));
                ctx.changed = true;
                return Ok(LockOutput::Acquire(lock::Acquired::Queued {
                    ticket,
                    position,
                    deadline,
                }));
            }
        }
        let token = self
            .grant(name, owner, ttl_ms, value.to_vec(), ticket, leases, ctx)
            .map_err(LockError::Lease)?;
        Ok(LockOutput::Acquire(lock::Acquired::Held(
            self.hold_info(name, token, leases, ctx.clock),
        )))
    }

    /// Gives a permit of `name` (which has one free) a fresh lease and the next token.
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &mut self,
        name: &str,
        owner: &str,
        ttl_ms: u64,
        value: Vec<u8>,
        ticket: Revision,
        leases: &mut LeaseState,
        ctx: &mut Ctx,
    ) -> Result<FencingToken, crate::lease::LeaseError> {
        let granted = leases.apply(
            &LeaseCommand::Grant(lease::Grant { id: None, ttl_ms }),
            ctx.clock,
        )?;
        let LeaseOutput::Granted(lease) = granted else {
            unreachable!("a grant answers Granted")
        };
        let token = FencingToken(ctx.revision.0.max(self.last_token.0 + 1));
        self.last_token = token;
        let lock = self.locks.get_mut(name).expect("the lock exists");
        lock.holders.insert(
            token,
            Holder {
                owner: owner.to_owned(),
                lease: lease.id,
                ticket,
                value,
            },
        );
        self.by_lease.insert(lease.id, (name.to_owned(), token));
        ctx.changed = true;
        ctx.wake(Wake::Lock(name.to_owned()));
        Ok(token)
    }

    /// The lease `lease` has ended (expired, revoked or released): ends the hold on it and grants
    /// its permit to the next live waiter, all in the current revision.
    pub fn release_lease(&mut self, lease: LeaseId, leases: &mut LeaseState, ctx: &mut Ctx) {
        let Some((name, token)) = self.by_lease.remove(&lease) else {
            return;
        };
        let lock = self
            .locks
            .get_mut(&name)
            .expect("LK3: a held lease's lock exists");
        lock.holders.remove(&token);
        ctx.changed = true;
        ctx.wake(Wake::Lock(name.clone()));
        self.promote(&name, leases, ctx);
        self.forget_if_unused(&name);
    }

    /// Grants free permits of `name` to its waiters in queue order, dropping any whose deadline
    /// has passed.
    fn promote(&mut self, name: &str, leases: &mut LeaseState, ctx: &mut Ctx) {
        loop {
            let lock = self.locks.get_mut(name).expect("the lock exists");
            if lock.holders.len() >= lock.permits as usize {
                return;
            }
            let Some(waiter) = lock.waiters.pop_front() else {
                return;
            };
            self.by_deadline
                .remove(&(waiter.deadline, name.to_owned(), waiter.ticket));
            if waiter.deadline <= ctx.clock {
                continue;
            }
            // A waiter that cannot get a lease (the lease table is full) is dropped: its caller
            // sees its ticket gone, as if its wait had ended.
            let _ = self.grant(
                name,
                &waiter.owner,
                waiter.ttl_ms,
                waiter.value,
                waiter.ticket,
                leases,
                ctx,
            );
        }
    }

    /// Drops every waiter whose deadline is at or before the clock, waking its call; returns
    /// how many.
    pub fn expire_waiters(&mut self, ctx: &mut Ctx) -> usize {
        let clock = ctx.clock;
        let due: Vec<(Millis, String, Revision)> = self
            .by_deadline
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= clock)
            .cloned()
            .collect();
        for entry in &due {
            self.by_deadline.remove(entry);
            let (_, name, ticket) = entry;
            let lock = self
                .locks
                .get_mut(name)
                .expect("LK5: a waiter's lock exists");
            lock.waiters.retain(|w| w.ticket != *ticket);
            self.forget_if_unused(name);
            ctx.wake(Wake::Lock(name.clone()));
        }
        due.len()
    }

    /// How many waiters each node has queued, by node.
    pub fn waiters_by_node(&self) -> BTreeMap<u64, usize> {
        let mut by_node = BTreeMap::new();
        for w in self.locks.values().flat_map(|lock| &lock.waiters) {
            *by_node.entry(w.node).or_insert(0) += 1;
        }
        by_node
    }

    /// The earliest waiter deadline, so the node knows when a tick has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(deadline, _, _)| *deadline)
    }

    /// Whether `token` holds `name` at log time `clock`: what `CheckFence` and the KV fence
    /// compare ask. A hold whose deadline has passed no longer holds, even before the `Tick` that
    /// ends it is applied.
    pub fn is_current(
        &self,
        name: &str,
        token: FencingToken,
        leases: &LeaseState,
        clock: Millis,
    ) -> bool {
        self.holder(name, token, leases, clock).is_ok()
    }

    /// The lock as seen at log time `clock`.
    pub fn get(&self, name: &str, leases: &LeaseState, clock: Millis) -> LockInfo {
        let Some(lock) = self.locks.get(name) else {
            return LockInfo {
                name: name.to_owned(),
                permits: 0,
                holders: Vec::new(),
                waiters: Vec::new(),
            };
        };
        LockInfo {
            name: name.to_owned(),
            permits: lock.permits,
            holders: lock
                .holders
                .keys()
                .map(|token| self.hold_info(name, *token, leases, clock))
                .collect(),
            waiters: lock
                .waiters
                .iter()
                .map(|w| WaiterInfo {
                    owner: w.owner.clone(),
                    ticket: w.ticket,
                    deadline: w.deadline,
                })
                .collect(),
        }
    }

    /// An election's leader: the holder with the smallest token.
    pub fn leader(&self, name: &str, leases: &LeaseState, clock: Millis) -> Option<HoldInfo> {
        let lock = self.locks.get(name)?;
        let token = lock.holders.keys().next()?;
        Some(self.hold_info(name, *token, leases, clock))
    }

    /// Where the acquire with `ticket` stands.
    pub fn ticket_status(
        &self,
        name: &str,
        ticket: Revision,
        leases: &LeaseState,
        clock: Millis,
    ) -> TicketStatus {
        let Some(lock) = self.locks.get(name) else {
            return TicketStatus::Gone;
        };
        if let Some((token, _)) = lock.holders.iter().find(|(_, h)| h.ticket == ticket) {
            return TicketStatus::Held(self.hold_info(name, *token, leases, clock));
        }
        match lock.waiters.iter().position(|w| w.ticket == ticket) {
            Some(position) => TicketStatus::Waiting {
                position: position as u64,
            },
            None => TicketStatus::Gone,
        }
    }

    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    pub fn last_token(&self) -> FencingToken {
        self.last_token
    }

    pub fn check_invariants(&self, leases: &LeaseState) {
        let mut tokens = BTreeSet::new();
        let mut waiting = BTreeSet::new();
        for (name, lock) in &self.locks {
            assert!(
                (1..=LOCK_PERMITS_MAX).contains(&lock.permits),
                "LK1: lock {name} has {} permits",
                lock.permits
            );
            assert!(
                lock.holders.len() <= lock.permits as usize,
                "LK1: lock {name} has {} holders for {} permits",
                lock.holders.len(),
                lock.permits
            );
            assert!(
                lock.waiters.is_empty() || lock.holders.len() == lock.permits as usize,
                "LK2: lock {name} has waiters and a free permit"
            );
            for (token, holder) in &lock.holders {
                assert!(
                    leases.is_alive(holder.lease),
                    "LK3: holder {token} of {name} has lease {} which is not alive",
                    holder.lease
                );
                assert_eq!(
                    self.by_lease.get(&holder.lease),
                    Some(&(name.clone(), *token)),
                    "LK3: lease index does not map lease {} to {name}/{token}",
                    holder.lease
                );
                assert!(tokens.insert(*token), "LK4: token {token} is held twice");
                assert!(
                    token.0 >= holder.ticket.0 && *token <= self.last_token,
                    "LK4: token {token} of {name} is outside [ticket {}, last token {}]",
                    holder.ticket,
                    self.last_token
                );
            }
            for pair in lock.waiters.iter().collect::<Vec<_>>().windows(2) {
                assert!(
                    pair[0].ticket < pair[1].ticket,
                    "LK5: lock {name} queues ticket {} before {}",
                    pair[0].ticket,
                    pair[1].ticket
                );
            }
            for w in &lock.waiters {
                waiting.insert((w.deadline, name.clone(), w.ticket));
            }
            assert!(
                !lock.holders.is_empty() || !lock.waiters.is_empty(),
                "LK6: lock {name} is kept with no holder and no waiter"
            );
        }
        assert_eq!(
            self.by_lease.len(),
            tokens.len(),
            "LK3: the lease index has {} entries for {} holders",
            self.by_lease.len(),
            tokens.len()
        );
        assert!(
            waiting == self.by_deadline,
            "LK5: the deadline index does not list exactly the waiters"
        );
    }

    /// The holder of `token`, if its hold is still alive at `clock`: an expired hold can neither
    /// renew, release nor proclaim, even before the `Tick` that ends it is applied.
    fn holder(
        &self,
        name: &str,
        token: FencingToken,
        leases: &LeaseState,
        clock: Millis,
    ) -> Result<&Holder, LockError> {
        self.locks
            .get(name)
            .and_then(|lock| lock.holders.get(&token))
            .filter(|holder| {
                leases
                    .info(holder.lease, clock)
                    .is_some_and(|lease| lease.deadline > clock)
            })
            .ok_or_else(|| LockError::StaleToken {
                name: name.to_owned(),
                token,
            })
    }

    fn hold_info(
        &self,
        name: &str,
        token: FencingToken,
        leases: &LeaseState,
        clock: Millis,
    ) -> HoldInfo {
        let holder = &self.locks[name].holders[&token];
        let lease = leases
            .info(holder.lease, clock)
            .expect("LK3: a holder's lease is alive");
        HoldInfo {
            name: name.to_owned(),
            owner: holder.owner.clone(),
            token,
            lease: holder.lease,
            ttl_ms: lease.ttl_ms,
            deadline: lease.deadline,
            remaining_ms: lease.remaining_ms,
            ticket: holder.ticket,
            value: holder.value.clone(),
        }
    }

    fn forget_if_unused(&mut self, name: &str) {
        if self
            .locks
            .get(name)
            .is_some_and(|lock| lock.holders.is_empty() && lock.waiters.is_empty())
        {
            self.locks.remove(name);
        }
    }
}

fn check_value(value: &[u8]) -> Result<(), LockError> {
    if value.len() > ELECTION_VALUE_BYTES_MAX {
        return Err(LockError::ValueTooLarge { bytes: value.len() });
    }
    Ok(())
}
