"""Persistence: the SQL schema (the source of truth for every item) and the store over it."""

from qocr.models.base import Base
from qocr.models.entities import Attempt, Batch, Item, Result
from qocr.models.schedule_run import ScheduleRun
from qocr.models.schedule_sources import ScheduleSource
from qocr.models.shards import BatchShard, ShardItem
from qocr.models.states import AttemptOutcome, BatchState, ItemState
from qocr.models.submissions import SubmitRejection
from qocr.models.tallies import BatchTally
from qocr.models.webhooks import WebhookDelivery

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Base",
    "Batch",
    "BatchShard",
    "BatchState",
    "BatchTally",
    "Item",
    "ItemState",
    "Result",
    "ScheduleRun",
    "ScheduleSource",
    "ShardItem",
    "SubmitRejection",
    "WebhookDelivery",
]
