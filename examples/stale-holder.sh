#!/bin/sh
# The stale lock holder, end to end, with the plinth CLI against a running server:
# A acquires, A stalls past its ttl, B acquires, A's fenced write is refused, B's succeeds.
#
#   cargo run --release -- serve &            # in another terminal
#   PLINTH=target/release/plinth sh examples/stale-holder.sh
#
# PLINTH is the plinth binary (default: plinth on the PATH); PLINTH_ENDPOINT the server
# (default: http://127.0.0.1:7070).
set -eu
PLINTH=${PLINTH:-plinth}
LOCK=orders-db-$$

# 1. A takes the lock with a 1 s ttl. It gets a fencing token; a hold is renewed by its holder
#    (`plinth lock renew`, or `plinth lock run` and the SDK's LockGuard, which renew for you).
A=$("$PLINTH" lock acquire "$LOCK" --owner A --ttl 1s)
echo "A holds $LOCK with fencing token $A"

# 2. A stalls (a GC pause, a swapped-out VM, a partition) for longer than its ttl, so it does
#    not renew. Its hold expires on the server.
sleep 2

# 3. B takes the lock. Its token is larger than A's.
B=$("$PLINTH" lock acquire "$LOCK" --owner B --ttl 10s --wait 5s)
echo "B holds $LOCK with fencing token $B"

# 4. A wakes up, still believing it holds the lock, and writes. The write is fenced: it applies
#    only if A's token still holds the lock. It does not, so nothing is written.
if "$PLINTH" kv put "orders/total" "written-by-A" --fence "$LOCK" --token "$A"; then
    echo "A's stale write was accepted: fencing is broken" >&2
    exit 1
fi
echo "A's write was refused: token $A is stale"

# 5. B writes with its own token, and the write applies.
"$PLINTH" kv put "orders/total" "written-by-B" --fence "$LOCK" --token "$B"

# 6. A system outside plinth asks the same question with `lock check` (CheckFence).
echo "token $A is $("$PLINTH" lock check "$LOCK" "$A" || true); token $B is $("$PLINTH" lock check "$LOCK" "$B")"
echo "orders/total = $("$PLINTH" kv get orders/total)"
"$PLINTH" lock release "$LOCK" "$B"
