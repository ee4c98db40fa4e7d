"""The generic cell-rate algorithm (GCRA) for two budgets at once: requests and tokens.

Pure arithmetic over a small state, so the in-memory limiter runs exactly this code and the
Redis Lua script (``worker/throttle_redis.py``) mirrors it line for line. The state is the
theoretical arrival time (TAT) of each budget: a call may start once the clock has reached
both, and it pushes each TAT forward by its cost. With no burst allowance, calls are spaced
evenly: the service answers ramps with ``Throttling.BurstRate``.
"""

from __future__ import annotations

from dataclasses import dataclass

# After a 429 the rate drops to this share of the limit at least...
MIN_FACTOR = 0.2
# ...by this step per 429...
PENALTY = 0.9
# ...and climbs back to the full rate over this many seconds (the service "recovers within
# one minute"). A mild, short penalty: a lone 429 costs the fleet about half a second of
# calls, while a limit that really is lower (another client on the account) still drives
# the rate down step by step (bench/RESULTS.md, saturation).
RECOVERY_SECONDS = 10.0
# 429s that arrive together answer one burst: they slow the fleet down once, not once each
# (a dozen in-flight calls failing at once would otherwise drive the rate to the floor).
PENALTY_COOLDOWN_SECONDS = 2.0


@dataclass
class GcraState:
    """What the limiter remembers for one model (all times in seconds on one clock)."""

    request_tat: float = 0.0
    token_tat: float = 0.0
    factor: float = 1.0  # the share of the limit in force after the last 429
    penalized_at: float = 0.0
    paused_until: float = 0.0  # a Retry-After pauses every caller


@dataclass(frozen=True)
class Grant:
    """A reservation: ``granted`` calls may start after ``wait`` seconds; others retry later."""

    granted: bool
    wait: float


def current_factor(state: GcraState, now: float) -> float:
    """The share of the limit in force now: linear recovery from the last penalty."""
    if state.factor >= 1.0:
        return 1.0
    recovered = state.factor + (1.0 - state.factor) * (now - state.penalized_at) / RECOVERY_SECONDS
    return min(1.0, recovered)


def reserve(
    state: GcraState,
    now: float,
    request_interval: float,
    token_interval: float,
    tokens: int,
    max_wait: float,
) -> Grant:
    """Reserve a slot for one call of ``tokens`` tokens, if it starts within ``max_wait``.

    ``request_interval`` is seconds per request at the full limit, ``token_interval``
    seconds per token (0 disables the token budget). The state changes only when granted.
    """
    factor = current_factor(state, now)
    start = max(now, state.paused_until, state.request_tat, state.token_tat)
    wait = start - now
    if wait > max_wait:
        return Grant(granted=False, wait=wait)
    state.request_tat = start + request_interval / factor
    if token_interval > 0:
        state.token_tat = start + tokens * token_interval / factor
    return Grant(granted=True, wait=wait)


def settle(state: GcraState, token_interval: float, estimated: int, actual: int) -> None:
    """Charge what a call used beyond its estimate, once the real usage is known.

    Never a refund: slots already granted were spaced on the old arrival time, and moving
    it back would hand the same seconds out twice (a burst the service answers with 429s).
    """
    if token_interval > 0 and actual > estimated:
        state.token_tat += (actual - estimated) * token_interval


def penalize(state: GcraState, now: float, retry_after: float | None) -> None:
    """A 429 came back: slow every caller down, and pause them all for ``retry_after``."""
    if now - state.penalized_at >= PENALTY_COOLDOWN_SECONDS:
        state.factor = max(MIN_FACTOR, current_factor(state, now) * PENALTY)
        state.penalized_at = now
    if retry_after:
        state.paused_until = max(state.paused_until, now + retry_after)
