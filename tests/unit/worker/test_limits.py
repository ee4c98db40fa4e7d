"""The operational limits hold their relations, and a change that breaks one fails at import."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from qocr.settings import Settings
from qocr.worker.app import celery_config
from qocr.worker.limits import LIMITS, LimitsError, OperationalLimits


def test_every_relation_holds_for_the_values_in_force() -> None:
    broken = [text for text, holds in LIMITS.relations() if not holds]
    assert broken == []
    assert LIMITS.task_hard_time_limit_seconds < LIMITS.visibility_timeout_seconds
    assert LIMITS.tick_hard_time_limit_seconds < LIMITS.visibility_timeout_seconds


@pytest.mark.parametrize(
    ("change", "relation"),
    [
        ({"task_soft_time_limit_seconds": 300}, "task soft time limit < task hard"),
        ({"task_hard_time_limit_seconds": 900}, "task hard time limit < visibility timeout"),
        ({"visibility_timeout_seconds": 600}, "tick hard time limit < visibility timeout"),
        ({"tick_soft_time_limit_seconds": 840}, "tick soft time limit < tick hard"),
        ({"throttle_max_wait_seconds": 130}, "retry budget + throttle max wait + call deadline"),
        ({"call_deadline_default_seconds": 220}, "throttle max wait + call deadline < task soft"),
        ({"db_retry_cap_seconds": 900}, "database retry cap < visibility timeout"),
        ({"restore_scan_every": 90}, "restore interval x scan every < visibility timeout"),
        ({"lost_message_seconds": 60}, "dispatch window < lost-message timeout"),
        ({"publish_window_seconds": 180}, "one-shot publish window <= dispatch window"),
        ({"lease_renewals_per_lease": 1}, "lease renewals per lease >= 2"),
    ],
)
def test_a_broken_relation_raises_and_names_itself(change: dict[str, Any], relation: str) -> None:
    with pytest.raises(LimitsError, match=re.escape(relation)):
        replace(LIMITS, **change)


def test_the_default_call_deadline_is_the_one_checked() -> None:
    default = Settings.model_fields["call_deadline_seconds"].default
    assert LIMITS.call_deadline_default_seconds == default
    assert OperationalLimits() == LIMITS


def test_the_celery_app_uses_the_limits() -> None:
    config = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert config["task_soft_time_limit"] == LIMITS.task_soft_time_limit_seconds
    assert config["task_time_limit"] == LIMITS.task_hard_time_limit_seconds
    assert config["visibility_timeout"] == LIMITS.visibility_timeout_seconds
    transport = config["broker_transport_options"]
    assert transport == {
        "visibility_timeout": LIMITS.visibility_timeout_seconds,
        "unacked_restore_interval": LIMITS.restore_interval_seconds,
        "unacked_restore_throttle": LIMITS.restore_scan_every,
    }
