"""The generic cell-rate algorithm (GCRA) for two budgets at once, requests and tokens, and the
share of them the fleet uses (AIMD).

Pure arithmetic over a small state, so the in-memory limiter runs exactly this code and the
Redis Lua script (``worker/throttle_redis.py``) mirrors it line for line.

**Spacing.** The state keeps the theoretical arrival time (TAT) of each budget: a call may
start once the clock has reached both, and it pushes each TAT forward by its cost. There is
no burst allowance: calls are spaced evenly, as the service counts requests per second
(``Throttling.BurstRate``). While the budget is busy (a TAT ahead of the clock), a slot is
never less than :data:`LEAD_SECONDS` ahead, so what a worker does between its reservation
and its send (counting the call in SQL) fits before the slot instead of pushing the send
past it; the lead is at most one request interval (at a high rate, one call a few ms late
is within the headroom, and a longer lead would only hold every caller back). A budget with
room (both TATs behind the clock) grants the slot at once: a send a few ms after it crowds
nobody. A fleet that starts at once gets its first slots
one interval apart, and wider at first: after an idle spell the spacing starts
:data:`START_SLOWDOWN` wider and narrows to the limit's over :data:`START_SECONDS`, while its
processes open connections and compete for the CPU (their first calls leave late, and a late
call crowds the second of the calls after it).

**Tokens.** A call reserves its estimated tokens; when its usage is known the difference is
settled both ways: an overrun is charged, an unused part refunded (never into the past: an
idle budget earns no credit). The token budget is per minute, so a refund that lets the
next call start a little earlier cannot overrun it.

**Adaptive limits (AIMD).** The configured limits are ceilings; ``factor`` is the share of
them in force. Every reservation is counted in a ring of :data:`BUCKET_SECONDS` buckets by
its slot, every 429 by the slot of its call. A lone 429 is taken for jitter; when another
one came in the :data:`WINDOW_SECONDS` before it, the calls whose slots fell in that window
tell how fast the fleet sent (a share of the ceilings) and how much of it the service
accepted, and the factor drops multiplicatively to the accepted share times
:data:`HEADROOM`, if that is at least :data:`MIN_STEP` lower and the last decrease is
:data:`DECREASE_COOLDOWN_SECONDS` old (a burst of 429s is one change, one log line). The
measure is of what the service took, so the 429s of one episode converge on it instead of
compounding. After :data:`HOLD_SECONDS` without a decrease the factor climbs back
additively, :data:`PROBE_PER_SECOND` of the ceiling per second, to the ceiling: a limit that
was raised is found again. A Retry-After pauses every caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Aim this share of the limit: arrival times jitter by milliseconds on the wire, and the
# service counts per second. At 0.99 a call may leave 10 ms late before a one-second window
# of calls spaced one interval apart holds one too many.
HEADROOM = 0.99
# While the budget is busy, every slot is at least this far ahead of its reservation.
LEAD_SECONDS = 0.05
# A budget unused this long is idle; the next calls start slower (see the module docstring).
IDLE_SECONDS = 1.0
START_SLOWDOWN = 0.5
START_SECONDS = 5.0

# The ring of calls and 429s by slot: buckets of this many seconds...
BUCKET_SECONDS = 0.1
# ...this many of them (90 s: the throttle's max wait ahead, the status minute behind).
RING_BUCKETS = 900
# A 429 is judged on the calls of this many seconds before its slot (seconds in which the
# service refused calls show what it accepts; a longer window would average in the seconds
# the fleet sent less than that, and settle under the account's limit)...
WINDOW_SECONDS = 3.0
# ...once they span at least this long (a fraction of a second of calls says too little).
MIN_SPAN_SECONDS = 1.0
# A decrease smaller than this share of the rate in force is not made (nor logged)...
MIN_STEP = 0.005
# ...nor one within this long of the last: the 429s in between are counted for the next.
DECREASE_COOLDOWN_SECONDS = 1.0
# The factor never drops below this share of the ceilings.
MIN_FACTOR = 0.05
# After a decrease the factor holds this long, then climbs this share of the ceiling per
# second: 600 -> 1,200 RPM (a raised limit, found again) in under a minute and a half.
HOLD_SECONDS = 10.0
PROBE_PER_SECOND = 0.006


@dataclass
class GcraState:
    """What the limiter remembers for one model (all times in seconds on one clock).

    ``sent`` and ``throttled`` are rings indexed by ``bucket % RING_BUCKETS``: (bucket,
    calls, tokens) reserved in that bucket of slots, and (bucket, 429s).
    """

    request_tat: float = 0.0
    token_tat: float = 0.0
    factor: float = 1.0  # the share of the ceilings set by the last decrease
    penalized_at: float = 0.0  # when the last decrease was made
    paused_until: float = 0.0  # a Retry-After pauses every caller
    started_at: float = 0.0  # when the budget was last taken up after an idle spell
    sent: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    throttled: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    """A reservation: ``granted`` calls may start after ``wait`` seconds, at ``slot`` on the
    limiter's clock, under ``factor``; ``recovered``: this reservation found the fleet back
    at its ceilings after a decrease (said once)."""

    granted: bool
    wait: float
    slot: float = 0.0
    factor: float = 1.0
    recovered: bool = False


@dataclass(frozen=True)
class Decrease:
    """A 429 lowered the fleet's share of its ceilings (made once, by one caller)."""

    before: float
    after: float
    share_429: float  # of the calls in the window


@dataclass(frozen=True)
class Window:
    """The calls of the window before a slot, and the 429s among them."""

    calls: int
    tokens: int
    throttled: int
    span: float  # seconds from the first bucket with calls to the window's end


def bucket_of(t: float) -> int:
    return math.floor(t / BUCKET_SECONDS)


def current_factor(state: GcraState, now: float) -> float:
    """The share of the ceilings in force now: held after a decrease, then climbing."""
    if state.factor >= 1.0:
        return 1.0
    climbed = PROBE_PER_SECOND * max(0.0, now - state.penalized_at - HOLD_SECONDS)
    return min(1.0, state.factor + climbed)


def count_sent(state: GcraState, slot: float, calls: int, tokens: int) -> None:
    bucket = bucket_of(slot)
    index = bucket % RING_BUCKETS
    held = state.sent.get(index)
    if held is not None and held[0] == bucket:
        state.sent[index] = (bucket, held[1] + calls, held[2] + tokens)
    else:
        state.sent[index] = (bucket, calls, tokens)


def count_throttled(state: GcraState, slot: float) -> None:
    bucket = bucket_of(slot)
    index = bucket % RING_BUCKETS
    held = state.throttled.get(index)
    count = held[1] + 1 if held is not None and held[0] == bucket else 1
    state.throttled[index] = (bucket, count)


def window(state: GcraState, first_bucket: int, last_bucket: int) -> Window:
    """Calls, tokens and 429s in the buckets ``first_bucket..last_bucket`` (inclusive)."""
    calls = tokens = throttled = 0
    earliest: int | None = None
    for bucket in range(first_bucket, last_bucket + 1):
        index = bucket % RING_BUCKETS
        sent = state.sent.get(index)
        if sent is not None and sent[0] == bucket and sent[1] > 0:
            calls += sent[1]
            tokens += sent[2]
            earliest = bucket if earliest is None else earliest
        refused = state.throttled.get(index)
        if refused is not None and refused[0] == bucket:
            throttled += refused[1]
    span = 0.0 if earliest is None else (last_bucket + 1 - earliest) * BUCKET_SECONDS
    return Window(calls, tokens, throttled, span)


def recent(state: GcraState, now: float, seconds: float) -> Window:
    """The calls whose slots fell in the last ``seconds`` (whole buckets), and their 429s."""
    last = bucket_of(now) - 1
    return window(state, last + 1 - round(seconds / BUCKET_SECONDS), last)


def reserve(
    state: GcraState,
    now: float,
    request_interval: float,
    token_interval: float,
    tokens: int,
    max_wait: float,
) -> Grant:
    """Reserve a slot for one call of ``tokens`` tokens, if it starts within ``max_wait``.

    ``request_interval`` is seconds per request at the ceiling, ``token_interval`` seconds per
    token (0 disables the token budget). The state changes only when granted.
    """
    factor = current_factor(state, now)
    busy = max(state.paused_until, state.request_tat, state.token_tat) > now
    # Never more than one interval: at a high rate, a longer lead only queues the callers.
    lead = min(LEAD_SECONDS, request_interval / factor) if busy else 0.0
    start = max(now + lead, state.paused_until, state.request_tat, state.token_tat)
    wait = start - now
    if wait > max_wait:
        return Grant(granted=False, wait=wait, factor=factor)
    if max(state.request_tat, state.token_tat) < now - IDLE_SECONDS:
        state.started_at = start
    slow = 1.0 + START_SLOWDOWN * max(0.0, 1.0 - (start - state.started_at) / START_SECONDS)
    state.request_tat = start + request_interval * slow / factor
    if token_interval > 0:
        state.token_tat = start + tokens * token_interval * slow / factor
    count_sent(state, start, 1, tokens)
    recovered = state.factor < 1.0 <= factor
    if recovered:
        state.factor = 1.0
    return Grant(granted=True, wait=wait, slot=start, factor=factor, recovered=recovered)


def settle(
    state: GcraState, now: float, token_interval: float, estimated: int, actual: int, slot: float
) -> None:
    """Settle a call's tokens once its usage is known: charge an overrun, refund the rest.

    A refund never moves the token arrival time into the past (an idle budget earns no
    credit); the ring keeps what the call really used, for the next 429's measure.
    """
    extra = actual - estimated
    if token_interval <= 0 or extra == 0:
        return
    state.token_tat = max(
        now, state.token_tat + extra * token_interval / current_factor(state, now)
    )
    count_sent(state, slot, 0, extra)


def penalize(
    state: GcraState,
    now: float,
    retry_after: float | None,
    slot: float | None,
    request_interval: float,
    token_interval: float,
) -> Decrease | None:
    """A 429 came back for the call at ``slot``: maybe lower the fleet's share (see the module
    docstring), and pause every caller for ``retry_after``. Intervals are at the ceiling;
    without a slot (a call not throttled here) only the pause."""
    if retry_after:
        state.paused_until = max(state.paused_until, now + retry_after)
    if slot is None:
        return None
    count_throttled(state, slot)
    last = bucket_of(slot) - 1  # the slot's own bucket holds calls not sent yet
    seen = window(state, last + 1 - round(WINDOW_SECONDS / BUCKET_SECONDS), last)
    # A lone 429 is jitter on the wire; another one in the window before it is a signal.
    if seen.calls == 0 or seen.throttled == 0 or seen.span < MIN_SPAN_SECONDS:
        return None
    share_429 = min(1.0, seen.throttled / seen.calls)
    # What the service took, as a share of the ceilings: the calls it did not refuse, and the
    # tokens the calls used (a refused call's were given back); the budget that binds counts.
    accepted = (
        max((seen.calls - seen.throttled) * request_interval, seen.tokens * token_interval)
        / seen.span
    )
    target = max(MIN_FACTOR, accepted * HEADROOM)
    before = current_factor(state, now)
    if target > before * (1.0 - MIN_STEP) or now - state.penalized_at < DECREASE_COOLDOWN_SECONDS:
        return None
    state.factor = target
    state.penalized_at = now
    return Decrease(before=before, after=target, share_429=share_429)
