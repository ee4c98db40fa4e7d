"""qocr's Python API: :class:`Client`, the records it returns, and the errors it raises.

The layer the ``qocr`` command calls (import-linter keeps it between the worker and the
CLI). ``from qocr import Client`` is enough for most uses; see docs/python-api.md.
"""

from qocr.api.client import Client
from qocr.api.records import (
    Batch,
    BatchStatus,
    CancelOutcome,
    Cost,
    Counts,
    DocumentCounts,
    ItemResult,
    ModelCost,
    Rejection,
    RequestCounts,
    RetryOutcome,
    Saved,
    Shard,
    Submission,
    Throughput,
    TokenUsage,
    WebhookDelivery,
)
from qocr.errors import ConfigError, NotFoundError, QocrError
from qocr.migrations.database import DatabaseUnavailable
from qocr.qwen.errors import OptionsError
from qocr.scheduler.idempotency import IdempotencyConflict
from qocr.scheduler.requests import RequestError
from qocr.scheduler.sources import SourceError
from qocr.scheduler.webhook_signature import SignatureError
from qocr.scheduler.webhook_signature import verify as verify_signature

__all__ = [
    "Batch",
    "BatchStatus",
    "CancelOutcome",
    "Client",
    "ConfigError",
    "Cost",
    "Counts",
    "DatabaseUnavailable",
    "DocumentCounts",
    "IdempotencyConflict",
    "ItemResult",
    "ModelCost",
    "NotFoundError",
    "OptionsError",
    "QocrError",
    "Rejection",
    "RequestCounts",
    "RequestError",
    "RetryOutcome",
    "Saved",
    "Shard",
    "SignatureError",
    "SourceError",
    "Submission",
    "Throughput",
    "TokenUsage",
    "WebhookDelivery",
    "verify_signature",
]
