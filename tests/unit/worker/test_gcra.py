"""The throttle's arithmetic (GCRA for requests and tokens, the fleet's AIMD share), one table
per function."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from qocr.worker.gcra import (
    BUCKET_SECONDS,
    DECREASE_COOLDOWN_SECONDS,
    HEADROOM,
    HOLD_SECONDS,
    IDLE_SECONDS,
    LEAD_SECONDS,
    MIN_FACTOR,
    PROBE_PER_SECOND,
    START_SLOWDOWN,
    GcraState,
    Grant,
    bucket_of,
    count_sent,
    count_throttled,
    current_factor,
    penalize,
    recent,
    reserve,
    settle,
)

NOW = 1000.0
# 600 RPM and 60,000 TPM at the ceiling (the limiter's intervals: headroom included).
REQUEST_INTERVAL = 0.1
TOKEN_INTERVAL = 0.001


@pytest.mark.parametrize(
    ("state", "now", "factor"),
    [
        (GcraState(), NOW, 1.0),
        (GcraState(factor=0.5, penalized_at=NOW), NOW, 0.5),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + HOLD_SECONDS, 0.5),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + HOLD_SECONDS + 10, 0.5 + 10 * 0.006),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + HOLD_SECONDS + 1000, 1.0),
    ],
    ids=["never lowered", "just lowered", "held", "probing up", "back at the ceiling"],
)
def test_current_factor_holds_then_climbs_additively(
    state: GcraState, now: float, factor: float
) -> None:
    assert PROBE_PER_SECOND == 0.006
    assert current_factor(state, now) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("state", "tokens", "max_wait", "grant", "request_tat", "token_tat"),
    [
        # Idle: a budget with room grants at once; the next request may start one (wider: a
        # start) interval later.
        (GcraState(), 100, 5.0, Grant(True, 0.0), NOW + 0.75, 0.0),
        # Busy, its next slot nearer than the lead: one lead ahead.
        (
            GcraState(request_tat=NOW + 0.01),
            10,
            5.0,
            Grant(True, LEAD_SECONDS),
            NOW + LEAD_SECONDS + 0.5,
            NOW + LEAD_SECONDS + 0.1,
        ),
        # A request arrival time in the future: wait for it.
        (GcraState(request_tat=NOW + 2), 10, 5.0, Grant(True, 2.0), NOW + 2.5, NOW + 2.1),
        # The token budget binds: wait for it, and push it by this call's tokens.
        (GcraState(token_tat=NOW + 3), 10, 5.0, Grant(True, 3.0), NOW + 3.5, NOW + 3.1),
        # A Retry-After pause holds every caller (and they start again slowly).
        (GcraState(paused_until=NOW + 4), 10, 5.0, Grant(True, 4.0), NOW + 4.75, NOW + 4.15),
        # Beyond max_wait: refused, and the state is left as it was.
        (GcraState(request_tat=NOW + 6), 10, 5.0, Grant(False, 6.0), NOW + 6, 0.0),
        # Slowed down to half the ceilings: twice the spacing, for requests and tokens.
        (
            GcraState(factor=0.5, penalized_at=NOW, request_tat=NOW + 1),
            100,
            5.0,
            Grant(True, 1.0),
            NOW + 2.0,
            NOW + 3.0,
        ),
    ],
    ids=[
        "idle",
        "busy within the lead",
        "request due",
        "tokens due",
        "paused",
        "beyond max wait",
        "slowed down",
    ],
)
def test_reserve(
    state: GcraState,
    tokens: int,
    max_wait: float,
    grant: Grant,
    request_tat: float,
    token_tat: float,
) -> None:
    token_interval = 0.0 if state == GcraState() else 0.01
    result = reserve(state, NOW, 0.5, token_interval, tokens, max_wait)
    assert result.granted == grant.granted
    assert result.wait == pytest.approx(grant.wait)
    assert state.request_tat == pytest.approx(request_tat)
    assert state.token_tat == pytest.approx(token_tat)
    if result.granted:
        # Counted in the ring by its slot, with its tokens.
        assert result.slot == pytest.approx(NOW + grant.wait)
        assert recent(state, result.slot + 1, 2.0).calls == 1
        assert recent(state, result.slot + 1, 2.0).tokens == tokens
    else:
        assert state.sent == {}


def test_a_fleet_starting_at_once_is_spread_wider_at_first() -> None:
    state = GcraState()
    slots = [reserve(state, NOW, REQUEST_INTERVAL, 0.0, 1, 20.0).slot for _ in range(100)]
    assert slots[0] == pytest.approx(NOW)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert gaps[0] == pytest.approx(REQUEST_INTERVAL * (1 + START_SLOWDOWN))
    # Narrowing to the limit's own spacing, which it keeps once the start is over.
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(gaps))
    settled = [gap for slot, gap in zip(slots, gaps, strict=False) if slot >= NOW + 5.1]
    assert settled and settled == pytest.approx([REQUEST_INTERVAL] * len(settled))
    # Any one second holds at most 1 / interval of them: no burst at the start.
    assert max(sum(1 for s in slots if t <= s < t + 1.0) for t in slots) == 10


@pytest.mark.parametrize(
    ("request_tat", "gap"),
    [
        (NOW - 2 * IDLE_SECONDS, REQUEST_INTERVAL * (1 + START_SLOWDOWN)),  # idle: a new start
        (NOW - IDLE_SECONDS / 2, REQUEST_INTERVAL),  # a pause between calls: still running
        (NOW + 3.0, REQUEST_INTERVAL),  # busy
    ],
    ids=["after an idle spell", "short pause", "busy"],
)
def test_only_a_start_after_an_idle_spell_is_slowed(request_tat: float, gap: float) -> None:
    state = GcraState(request_tat=request_tat, started_at=NOW - 100)
    first = reserve(state, NOW, REQUEST_INTERVAL, 0.0, 1, 20.0)
    second = reserve(state, NOW, REQUEST_INTERVAL, 0.0, 1, 20.0)
    assert second.slot - first.slot == pytest.approx(gap)


def test_the_first_reservation_at_the_ceiling_again_says_so_once() -> None:
    state = GcraState(factor=0.9, penalized_at=NOW - 1000)
    first = reserve(state, NOW, REQUEST_INTERVAL, 0.0, 1, 20.0)
    second = reserve(state, NOW, REQUEST_INTERVAL, 0.0, 1, 20.0)
    assert (first.recovered, first.factor, second.recovered) == (True, 1.0, False)
    assert state.factor == 1.0


@pytest.mark.parametrize(
    ("token_interval", "estimated", "actual", "token_tat", "ring_tokens"),
    [
        (0.01, 100, 300, NOW + 12.0, 300),  # used 200 more: charged
        (0.01, 300, 100, NOW + 8.0, 100),  # used 200 less: refunded
        (0.01, 3000, 100, NOW, 100),  # a refund never reaches into the past
        (0.01, 100, 100, NOW + 10.0, 100),  # as estimated: nothing to settle
        (0.0, 100, 300, NOW + 10.0, 100),  # no token budget
    ],
    ids=["overrun", "refund", "no credit for the past", "exact", "no token budget"],
)
def test_settle_charges_overruns_and_refunds_the_rest(
    token_interval: float, estimated: int, actual: int, token_tat: float, ring_tokens: int
) -> None:
    state = GcraState(token_tat=NOW + 10)
    count_sent(state, NOW - 0.5, 1, estimated)
    settle(state, NOW, token_interval, estimated, actual, NOW - 0.5)
    assert state.token_tat == pytest.approx(token_tat)
    assert recent(state, NOW, 1.0).tokens == ring_tokens


def fleet(seconds: float, calls_per_second: float, throttled_per_second: float) -> GcraState:
    """A state whose ring holds ``seconds`` of calls before NOW, some answered 429."""
    state = GcraState()
    calls = round(seconds * calls_per_second)
    for i in range(calls):
        slot = NOW - seconds + i / calls_per_second
        count_sent(state, slot, 1, 100)
    refused = round(seconds * throttled_per_second)
    for i in range(refused):
        count_throttled(state, NOW - seconds + (i + 0.5) * seconds / max(refused, 1))
    return state


def test_a_lone_429_is_jitter_and_changes_nothing() -> None:
    state = fleet(10, 10, 0)
    assert penalize(state, NOW, None, NOW, REQUEST_INTERVAL, 0.0) is None
    assert current_factor(state, NOW) == 1.0


@pytest.mark.parametrize(
    ("calls_per_second", "throttled_per_second", "factor"),
    [
        # Sent at the ceiling, half refused: the service takes half of it.
        (10, 5, 0.5 * HEADROOM),
        # Sent at the ceiling, 1 in 10 refused.
        (10, 1, 0.9 * HEADROOM),
        # Sent at 80 % of the ceiling (the fleet had less to do), half refused: 40 %.
        (8, 4, 0.4 * HEADROOM),
        # Almost everything refused: the floor.
        (10, 10, MIN_FACTOR),
    ],
    ids=["half", "a tenth", "below the ceiling", "floor"],
)
def test_429s_lower_the_rate_to_what_the_service_accepted(
    calls_per_second: float, throttled_per_second: float, factor: float
) -> None:
    state = fleet(10, calls_per_second, throttled_per_second)
    decrease = penalize(state, NOW, None, NOW, REQUEST_INTERVAL, 0.0)
    assert decrease is not None
    assert decrease.before == 1.0
    assert decrease.after == pytest.approx(factor, rel=0.03)
    assert current_factor(state, NOW + HOLD_SECONDS) == pytest.approx(factor, rel=0.03)
    assert state.penalized_at == NOW


def test_tokens_sent_count_when_the_token_budget_binds() -> None:
    # 2 calls a second of 500 tokens = 1,000 tokens a second at the ceiling (interval 0.001 s).
    state = GcraState()
    for i in range(20):
        count_sent(state, NOW - 10 + i / 2, 1, 500)
    for slot in (NOW - 2.5, NOW - 1.5):  # two of the six calls of the window's 3 s, refused
        count_throttled(state, slot)
        count_sent(state, slot, 0, -500)  # their tokens given back
    decrease = penalize(state, NOW, None, NOW, REQUEST_INTERVAL, TOKEN_INTERVAL)
    assert decrease is not None
    # Requests ran at 20 % of their ceiling, tokens at 100 %: tokens are what binds.
    assert decrease.after == pytest.approx(2 / 3 * HEADROOM, rel=0.03)


def test_429s_of_one_episode_converge_instead_of_compounding() -> None:
    state = fleet(10, 10, 5)
    first = penalize(state, NOW, None, NOW, REQUEST_INTERVAL, 0.0)
    assert first is not None
    # More 429s of calls sent before the decrease, a while later: the same evidence (what
    # the service accepted then), so no new step.
    later = [penalize(state, NOW + 2, None, NOW - 0.05, REQUEST_INTERVAL, 0.0) for _ in range(3)]
    assert later == [None, None, None]
    assert current_factor(state, NOW + 3) == pytest.approx(first.after)


def test_429s_within_the_cooldown_of_a_decrease_wait_for_the_next() -> None:
    state = fleet(10, 10, 1)
    first = penalize(state, NOW, None, NOW, REQUEST_INTERVAL, 0.0)
    assert first is not None
    for _ in range(30):  # many more 429s at once: counted, no change yet
        count_throttled(state, NOW - 1)
    assert (
        penalize(state, NOW + DECREASE_COOLDOWN_SECONDS / 2, None, NOW, REQUEST_INTERVAL, 0.0)
        is None
    )
    after = penalize(state, NOW + DECREASE_COOLDOWN_SECONDS, None, NOW, REQUEST_INTERVAL, 0.0)
    assert after is not None and after.after < first.after


@pytest.mark.parametrize(
    ("state", "retry_after", "paused_until"),
    [
        (GcraState(), 3.0, NOW + 3.0),
        (GcraState(paused_until=NOW + 10), 1.0, NOW + 10),  # never shortened
        (GcraState(), None, 0.0),
    ],
    ids=["retry-after", "longer pause kept", "no retry-after"],
)
def test_a_retry_after_pauses_every_caller(
    state: GcraState, retry_after: float | None, paused_until: float
) -> None:
    before = replace(state)
    assert penalize(state, NOW, retry_after, None, REQUEST_INTERVAL, 0.0) is None
    assert state.paused_until == pytest.approx(paused_until)
    # Without the call's slot there is nothing to measure: the rate is untouched.
    assert (state.factor, state.throttled) == (before.factor, before.throttled)


def test_too_short_a_window_says_too_little() -> None:
    state = fleet(0.5, 20, 10)  # half a second of calls
    assert penalize(state, NOW, None, NOW, REQUEST_INTERVAL, 0.0) is None


def test_the_ring_reuses_its_buckets_and_forgets_old_ones() -> None:
    state = GcraState()
    count_sent(state, NOW, 1, 10)
    count_sent(state, NOW + 90.0, 1, 10)  # the same ring index, 900 buckets later
    assert len(state.sent) == 1
    assert recent(state, NOW + 0.5, 1.0).calls == 0
    assert recent(state, NOW + 90.5, 1.0).calls == 1
    assert bucket_of(NOW + BUCKET_SECONDS / 2) == bucket_of(NOW)


def test_the_lead_is_at_most_one_interval() -> None:
    # A busy budget at a high rate (1 ms between calls): a 50 ms lead would hold each
    # caller back 50 ms for nothing; one interval suffices.
    state = GcraState(request_tat=NOW + 0.0001)
    grant = reserve(state, NOW, 0.001, 0.0, 1, 5.0)
    assert grant.wait == pytest.approx(0.001)
    # A slow rate keeps the whole lead.
    slow = GcraState(request_tat=NOW + 0.0001)
    assert reserve(slow, NOW, 0.5, 0.0, 1, 5.0).wait == pytest.approx(LEAD_SECONDS)
