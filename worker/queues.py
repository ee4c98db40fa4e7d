"""The names the broker knows: queues and tasks. Shared by the app, the publisher and beat."""

from __future__ import annotations

QUEUE = "qocr"
# Items that ran before (retries, a dead worker's items) and schedule ticks get their own
# queues, read in turn with the main one: never behind minutes of item messages.
RETRY_QUEUE = "qocr.retry"
CONTROL_QUEUE = "qocr.control"
# Where item messages wait: empty queues mean a dispatched item not received is in none.
ITEM_QUEUES = (QUEUE, RETRY_QUEUE)
ALL_QUEUES = (*ITEM_QUEUES, CONTROL_QUEUE)

ITEM_TASK = "qocr.process_item"
TICK_TASK = "qocr.schedule_tick"
# Producers that reach only the broker submit batches with it (docs/producers.md).
SUBMIT_TASK = "qocr.submit"
# One shard of a batch-mode batch: build and upload it, or collect its output (control queue).
SHARD_TASK = "qocr.batch_shard"
