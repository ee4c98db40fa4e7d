"""The throttle's arithmetic (GCRA for requests and tokens), one table per function."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qocr.worker.gcra import (
    MIN_FACTOR,
    PENALTY,
    PENALTY_COOLDOWN_SECONDS,
    RECOVERY_SECONDS,
    GcraState,
    Grant,
    current_factor,
    penalize,
    reserve,
    settle,
)

NOW = 1000.0


@pytest.mark.parametrize(
    ("state", "now", "factor"),
    [
        (GcraState(), NOW, 1.0),
        (GcraState(factor=0.5, penalized_at=NOW), NOW, 0.5),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + RECOVERY_SECONDS / 2, 0.75),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + RECOVERY_SECONDS, 1.0),
        (GcraState(factor=0.5, penalized_at=NOW), NOW + 10 * RECOVERY_SECONDS, 1.0),
    ],
    ids=["never penalized", "just penalized", "half recovered", "recovered", "long after"],
)
def test_current_factor_recovers_linearly(state: GcraState, now: float, factor: float) -> None:
    assert current_factor(state, now) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("state", "tokens", "max_wait", "grant", "request_tat", "token_tat"),
    [
        # Idle: at once; the next request may start one interval later.
        (GcraState(), 100, 5.0, Grant(True, 0.0), NOW + 0.5, NOW + 100 * 0.01),
        # A request arrival time in the future: wait for it.
        (GcraState(request_tat=NOW + 2), 10, 5.0, Grant(True, 2.0), NOW + 2.5, NOW + 2.1),
        # The token budget binds: wait for it, and push it by this call's tokens.
        (GcraState(token_tat=NOW + 3), 10, 5.0, Grant(True, 3.0), NOW + 3.5, NOW + 3.1),
        # A Retry-After pause holds every caller.
        (GcraState(paused_until=NOW + 4), 10, 5.0, Grant(True, 4.0), NOW + 4.5, NOW + 4.1),
        # Beyond max_wait: refused, and the state is left as it was.
        (GcraState(request_tat=NOW + 6), 10, 5.0, Grant(False, 6.0), NOW + 6, 0.0),
        # Slowed down to half the rate: twice the spacing, for requests and tokens.
        (
            GcraState(factor=0.5, penalized_at=NOW),
            100,
            5.0,
            Grant(True, 0.0),
            NOW + 1.0,
            NOW + 2.0,
        ),
    ],
    ids=["idle", "request due", "tokens due", "paused", "beyond max wait", "slowed down"],
)
def test_reserve(
    state: GcraState,
    tokens: int,
    max_wait: float,
    grant: Grant,
    request_tat: float,
    token_tat: float,
) -> None:
    result = reserve(state, NOW, 0.5, 0.01, tokens, max_wait)
    assert result.granted == grant.granted
    assert result.wait == pytest.approx(grant.wait)
    assert state.request_tat == pytest.approx(request_tat)
    assert state.token_tat == pytest.approx(token_tat)


def test_reserve_without_a_token_budget_leaves_tokens_alone() -> None:
    state = GcraState(token_tat=0.0)
    assert reserve(state, NOW, 0.5, 0.0, 10_000, 5.0) == Grant(True, 0.0)
    assert state.token_tat == 0.0


@pytest.mark.parametrize(
    ("token_interval", "estimated", "actual", "token_tat"),
    [
        (0.01, 100, 300, NOW + 2.0),  # used 200 more: charged
        (0.01, 300, 100, NOW),  # used less: never a refund
        (0.01, 100, 100, NOW),  # as estimated: nothing to settle
        (0.0, 100, 300, NOW),  # no token budget
    ],
    ids=["overrun", "underrun", "exact", "no token budget"],
)
def test_settle_charges_overruns_only(
    token_interval: float, estimated: int, actual: int, token_tat: float
) -> None:
    state = GcraState(token_tat=NOW)
    settle(state, token_interval, estimated, actual)
    assert state.token_tat == pytest.approx(token_tat)


@pytest.mark.parametrize(
    ("state", "retry_after", "factor", "penalized_at", "paused_until"),
    [
        # A first 429: one step down, no pause.
        (GcraState(), None, PENALTY, NOW, 0.0),
        # With a Retry-After: every caller pauses for it too.
        (GcraState(), 3.0, PENALTY, NOW, NOW + 3.0),
        # Within the cooldown of the last penalty: the same burst, not slowed again.
        (
            GcraState(factor=PENALTY, penalized_at=NOW - PENALTY_COOLDOWN_SECONDS / 2),
            None,
            PENALTY,
            NOW - PENALTY_COOLDOWN_SECONDS / 2,
            0.0,
        ),
        # After the cooldown: another step down from the rate in force now.
        (
            GcraState(factor=0.5, penalized_at=NOW - PENALTY_COOLDOWN_SECONDS),
            None,
            (0.5 + 0.5 * PENALTY_COOLDOWN_SECONDS / RECOVERY_SECONDS) * PENALTY,
            NOW,
            0.0,
        ),
        # A shorter Retry-After never shortens a longer pause.
        (GcraState(paused_until=NOW + 10), 1.0, PENALTY, NOW, NOW + 10),
    ],
    ids=["first", "retry-after", "same burst", "after cooldown", "longer pause kept"],
)
def test_penalize(
    state: GcraState,
    retry_after: float | None,
    factor: float,
    penalized_at: float,
    paused_until: float,
) -> None:
    before = replace(state)
    penalize(state, NOW, retry_after)
    assert state.factor == pytest.approx(factor)
    assert state.penalized_at == pytest.approx(penalized_at)
    assert state.paused_until == pytest.approx(paused_until)
    # Arrival times are untouched: a penalty slows what comes next, not what was granted.
    assert (state.request_tat, state.token_tat) == (before.request_tat, before.token_tat)


def test_a_429_every_cooldown_settles_above_the_floor() -> None:
    # Each cooldown recovers part of the last step, so back-to-back bursts converge on a
    # fixed point (about 0.64 today) instead of driving the fleet down to MIN_FACTOR.
    state = GcraState()
    now = NOW
    for _ in range(200):
        penalize(state, now, None)
        now += PENALTY_COOLDOWN_SECONDS
    share = PENALTY_COOLDOWN_SECONDS / RECOVERY_SECONDS
    fixed_point = PENALTY * share / (1 - PENALTY * (1 - share))
    assert state.factor == pytest.approx(fixed_point)
    assert state.factor > MIN_FACTOR
