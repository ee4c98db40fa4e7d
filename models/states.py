"""Item and batch states, and the one table of allowed item transitions."""

from __future__ import annotations

from enum import StrEnum


class ItemState(StrEnum):
    """Where one item (an image, a document or a document's page) stands; stored lowercase."""

    QUEUED = "queued"  # waiting in SQL (maybe also in the broker, or waiting for a retry time)
    RUNNING = "running"  # claimed by one worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A document (PDF, TIFF) whose pages were added to its batch as items of their own, in
    # the transaction that ended it (models.document_pages): it is done; its pages go on.
    EXPANDED = "expanded"


TERMINAL_ITEM_STATES = frozenset(
    {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED, ItemState.EXPANDED}
)

# The item state machine, written once. Every transition in the store is one conditional
# UPDATE whose WHERE clause names the states it may leave, taken from this table.
ITEM_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    # QUEUED -> SUCCEEDED: a paid result kept by a worker while the database was away,
    # saved after its lease had run out (models.transitions.save_kept_result).
    # QUEUED -> EXPANDED: a document in a batch-mode shard, whose pages the worker building
    # the shard's file added (models.document_pages.expand_in_shard).
    ItemState.QUEUED: frozenset(
        {
            ItemState.RUNNING,
            ItemState.CANCELLED,
            ItemState.FAILED,
            ItemState.SUCCEEDED,
            ItemState.EXPANDED,
        }
    ),
    # RUNNING -> QUEUED: a retry later, or a lease that expired under a dead worker.
    # RUNNING -> EXPANDED: a document whose worker read its page count and added its pages.
    ItemState.RUNNING: frozenset(
        {
            ItemState.SUCCEEDED,
            ItemState.FAILED,
            ItemState.QUEUED,
            ItemState.CANCELLED,
            ItemState.EXPANDED,
        }
    ),
    ItemState.SUCCEEDED: frozenset(),
    # Its pages are retried one by one (`qocr retry`), never the document again.
    ItemState.EXPANDED: frozenset(),
    # `qocr retry` puts failed and cancelled items back in the queue.
    ItemState.FAILED: frozenset({ItemState.QUEUED}),
    ItemState.CANCELLED: frozenset({ItemState.QUEUED}),
}


def sources_of(target: ItemState) -> tuple[ItemState, ...]:
    """The states from which ``target`` may be reached, for a transition's WHERE clause."""
    return tuple(state for state, targets in ITEM_TRANSITIONS.items() if target in targets)


class BatchState(StrEnum):
    """Where a batch stands as a whole."""

    RUNNING = "running"
    COMPLETED = "completed"  # every item reached a terminal state
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # a batch-wide error (invalid API key, unknown model): see stop_reason


class AttemptOutcome(StrEnum):
    """What one try of an item ended in (a call to the provider, or none: ``cached``)."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # a retryable error; the item was tried again
    FAILED = "failed"  # a final error for this item
    STOPPED = "stopped"  # an error that stopped the whole batch
    DISCARDED = "discarded"  # the call succeeded but the lease had moved on: no result kept
    # Written before the request leaves, in the transaction that counts it on the item.
    IN_FLIGHT = "in_flight"
    ABANDONED = "abandoned"  # its worker died (or its result was lost) before it ended
    CACHED = "cached"  # no call: a paid result of the same image and request was reused
