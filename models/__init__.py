"""Persistence: the SQL schema (the source of truth for every item) and the store over it."""

from models.base import Base
from models.entities import Attempt, Batch, Item, Result
from models.schedule_run import ScheduleRun
from models.states import AttemptOutcome, BatchState, ItemState
from models.tallies import BatchTally

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Base",
    "Batch",
    "BatchState",
    "BatchTally",
    "Item",
    "ItemState",
    "Result",
    "ScheduleRun",
]
