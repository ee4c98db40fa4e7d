"""Which items a schedule made for each source: what ``only_new`` looks up.

Items have no index on their source (migration 0011: it cost every submit seconds per
million). Only an ``only_new`` schedule needs to find a source's earlier items, so only its
batches are recorded here, in the transaction that creates them: one row per item made at
submit, keyed by (schedule, source digest). A source tried again after a failure gets a
second row; its state is read from ``items``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Select, String, Text, insert, literal, select
from sqlalchemy.orm import Mapped, mapped_column

from qocr.models.base import Base
from qocr.models.entities import BigId, Item, source_digest, waiting
from qocr.models.states import ItemState

# Items that count as done for ``only_new``: finished well, or on their way.
# An expanded document is done: its pages are items of that batch (and retried there).
DONE_ITEM_STATES = (ItemState.SUCCEEDED, ItemState.QUEUED, ItemState.RUNNING, ItemState.EXPANDED)


class ScheduleSource(Base):
    __tablename__ = "schedule_sources"

    # The primary key is the lookup: a schedule's rows for a list of digests.
    schedule_name: Mapped[str] = mapped_column(Text, primary_key=True)
    source_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Not a foreign key, as on items: nothing deletes an item (migration 0011).
    item_id: Mapped[int] = mapped_column(BigId, primary_key=True)


def record_sources(conn: Connection, schedule_name: str, batch_id: int) -> None:
    """Record every item of a new batch as made for ``schedule_name``.

    In the transaction that made the batch: its items are all still waiting in the queue,
    and ``waiting()`` reads them through the index that holds exactly those.
    """
    conn.execute(
        insert(ScheduleSource).from_select(
            ["schedule_name", "source_sha256", "item_id"],
            select(literal(schedule_name, Text), Item.source_sha256, Item.id).where(
                Item.batch_id == batch_id, waiting()
            ),
        )
    )


def done_versions_query(schedule_name: str, sources: Sequence[str]) -> Select[str, str | None]:
    """(source, fingerprint) of the items recorded for ``sources`` that are done or on
    their way: found by the registry's key, then each item by its primary key."""
    return (
        select(Item.source, Item.fingerprint)
        .join(ScheduleSource, ScheduleSource.item_id == Item.id)
        .where(
            ScheduleSource.schedule_name == schedule_name,
            ScheduleSource.source_sha256.in_([source_digest(source) for source in sources]),
            # The digest finds the rows; the source decides.
            Item.source.in_(list(sources)),
            Item.state.in_(DONE_ITEM_STATES),
        )
    )
