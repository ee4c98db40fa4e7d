"""The store: the one object the pipeline's SQL on batches and items goes through.

Its queries live in three modules, by what they own: :mod:`models.batches` (a batch as a
whole), :mod:`models.dispatching` (items between SQL and the broker) and
:mod:`models.transitions` (one item under a worker's lease). Scheduled runs
(:mod:`models.schedule_run`) and the reporting commands' reads (:mod:`models.reports`)
have query classes of their own.

Writes run on plain connections with Core statements: the ORM session's bookkeeping
(synchronizing updated objects, flushing a unit of work) cost more CPU per item than the
SQL itself, and no write here needs it.
"""

from __future__ import annotations

from qocr.models.batches import BatchWrites
from qocr.models.dispatching import DispatchQueries
from qocr.models.transitions import ItemTransitions


class Store(BatchWrites, DispatchQueries, ItemTransitions):
    """Every query of the pipeline on batches and items, over one engine."""
