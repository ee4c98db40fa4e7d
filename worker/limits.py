"""The operational limits that constrain each other, in one place, checked at import.

Celery's time limits, the broker's redelivery, the dispatcher's lost-message sweep, leases
and the throttle each run on their own clock, and they only work together in some orders:
a hard time limit past the visibility timeout, for instance, gets a running task delivered
again while it runs. :class:`OperationalLimits` states every such relation next to the
values, and building it with values that break one raises :class:`LimitsError`, so
importing this module fails at once, in every process and every test.

The call deadline is a setting (``QOCR_CALL_DEADLINE_SECONDS``); the relations are checked
against its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qocr.errors import QocrError
from qocr.settings import Settings


class LimitsError(QocrError):
    """Operational limits that contradict each other (a bug in this module's values)."""

    code = "limits_inconsistent"


def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class OperationalLimits:
    """Every value with its unit in its name; see :meth:`relations` for how they relate."""

    # One item's task: the soft limit raises inside the task (which gives its item back),
    # the hard limit kills the prefork child.
    task_soft_time_limit_seconds: float = 270
    task_hard_time_limit_seconds: float = 300
    # The schedule tick lists large S3 prefixes: minutes.
    tick_soft_time_limit_seconds: float = 780
    tick_hard_time_limit_seconds: float = 840
    # The broker delivers an unacked message again after the visibility timeout, found by
    # a sweep every restore interval that scans Redis every Nth time (kombu's defaults).
    visibility_timeout_seconds: float = 900
    restore_interval_seconds: float = 10
    restore_scan_every: int = 10
    # The dispatcher keeps this much API capacity in the broker, and takes a message not
    # claimed this long after dispatch as lost. The embedded runner's items wait in its own
    # thread pool, never in a broker: only a long wait there means an item was lost.
    dispatch_window_seconds: float = 120
    # A one-shot publish (`qocr submit`, a scheduled run) sends only this much: every
    # worker's dispatcher tops the window up within a second, and each message costs the
    # submit ~1 ms (2.75 s of a 1M-line submit for a full window: bench/RESULTS.md).
    publish_window_seconds: float = 5
    lost_message_seconds: float = 900
    # With the broker's queues empty, a message not received this long after dispatch is
    # in no queue: lost in a worker killed between fetching it and leasing its item.
    idle_lost_message_seconds: float = 30
    embedded_lost_message_seconds: float = 3600
    # A worker renews its leases this many times per lease.
    lease_renewals_per_lease: int = 3
    # One task's calls: each waits at most this long for a throttle slot and ends by the
    # call deadline; a few quick retries (tenacity) start only within the retry budget.
    throttle_max_wait_seconds: float = 20.0
    call_deadline_default_seconds: float = _setting_default("call_deadline_seconds")
    in_process_attempts: int = 3
    in_process_budget_seconds: float = 30.0
    in_process_max_sleep_seconds: float = 5.0
    # A document (PDF, TIFF) on S3 or behind a URL is downloaded within this, before the
    # page it is read for is rendered and called (worker/document_files.py).
    document_download_deadline_seconds: float = 60.0
    # The database is away (a restart): the task message is retried later, bounded.
    db_retry_cap_seconds: float = 30
    db_retries: int = 20
    # An item task that finds the database away waits this long for it in its slot, then
    # puts its message back in the queue.
    db_outage_wait_seconds: float = 60

    def __post_init__(self) -> None:
        broken = [text for text, holds in self.relations() if not holds]
        if broken:
            raise LimitsError("operational limits contradict each other: " + "; ".join(broken))

    def relations(self) -> list[tuple[str, bool]]:
        """Each relation as a sentence saying why, and whether it holds."""
        # tenacity never starts a try past the budget; the last one may wait for its slot,
        # then run to its deadline.
        calls_seconds = (
            self.in_process_budget_seconds
            + self.throttle_max_wait_seconds
            + self.call_deadline_default_seconds
        )
        restore_scan_seconds = self.restore_interval_seconds * self.restore_scan_every
        return [
            (
                "task soft time limit < task hard time limit "
                "(the task gives its item back before it is killed)",
                self.task_soft_time_limit_seconds < self.task_hard_time_limit_seconds,
            ),
            (
                "task hard time limit < visibility timeout "
                "(a running task is never delivered again while it runs)",
                self.task_hard_time_limit_seconds < self.visibility_timeout_seconds,
            ),
            (
                "tick soft time limit < tick hard time limit",
                self.tick_soft_time_limit_seconds < self.tick_hard_time_limit_seconds,
            ),
            (
                "tick hard time limit < visibility timeout "
                "(a running tick is never delivered again while it runs)",
                self.tick_hard_time_limit_seconds < self.visibility_timeout_seconds,
            ),
            (
                "retry budget + throttle max wait + call deadline < task soft time limit "
                "(a task's last call ends before its time does)",
                calls_seconds < self.task_soft_time_limit_seconds,
            ),
            (
                "document download deadline + retry budget + throttle max wait + call "
                "deadline < task soft time limit (a page's download and its calls end before "
                "its task's time does)",
                self.document_download_deadline_seconds + calls_seconds
                < self.task_soft_time_limit_seconds,
            ),
            (
                "database outage wait + retry budget + throttle max wait + call deadline "
                "< task soft time limit (a task that waited for the database still ends in time)",
                self.db_outage_wait_seconds + calls_seconds < self.task_soft_time_limit_seconds,
            ),
            (
                "database retry cap < visibility timeout "
                "(a retried message is not delivered twice while it waits)",
                self.db_retry_cap_seconds < self.visibility_timeout_seconds,
            ),
            (
                "restore interval x scan every < visibility timeout "
                "(the timeout, not the sweep, decides when a message comes back)",
                restore_scan_seconds < self.visibility_timeout_seconds,
            ),
            (
                "dispatch window < lost-message timeout "
                "(a message waiting its turn in the window is not taken as lost)",
                self.dispatch_window_seconds < self.lost_message_seconds,
            ),
            (
                "one-shot publish window <= dispatch window",
                self.publish_window_seconds <= self.dispatch_window_seconds,
            ),
            (
                "idle lost-message timeout < lost-message timeout",
                self.idle_lost_message_seconds < self.lost_message_seconds,
            ),
            (
                "lease renewals per lease >= 2 (a lease outlives one failed renewal)",
                self.lease_renewals_per_lease >= 2,
            ),
        ]


LIMITS = OperationalLimits()
