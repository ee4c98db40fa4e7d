"""``/metrics`` of ``qocr worker --metrics-port``: every process's counters, and fleet gauges.

The counters and histograms (:mod:`worker.metrics`) are written by every process of the
worker into the multiprocess directory; this server, in the main process, sums them at
scrape time (``MultiProcessCollector``). The gauges are not counted anywhere: they are read
when scraped, from where the truth is, so a prefork child that died leaves no stale value:

- ``qocr_rate_limit_requests_per_minute`` / ``..._tokens_per_minute``: the fleet's limit in
  force per model (the configured limit times the throttle's factor after recent 429s),
  and ``qocr_throttle_paused_seconds`` (a Retry-After pausing every caller), from Redis;
- ``qocr_batch_items{batch, state}``: queued and running items of each running batch (at
  most :data:`MAX_BATCHES`, newest first) and ``qocr_batches_running``, from SQL;
- ``qocr_webhook_deliveries_pending``, from SQL.

Every worker serves the same gauges (they describe the fleet, not the process): query them
with ``max`` across instances, the counters with ``sum``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from qocr.models.entities import Batch
from qocr.models.states import BatchState, ItemState
from qocr.models.tallies import item_counts
from qocr.models.webhooks import DeliveryState, WebhookDelivery
from qocr.qwen.catalog import model_spec
from qocr.settings import Settings
from qocr.worker import metrics
from qocr.worker.gcra import GcraState, current_factor
from qocr.worker.throttle import HEADROOM

log = logging.getLogger(__name__)

MAX_BATCHES = 100
THROTTLE_PREFIX = "qocr:throttle:"


class FleetCollector:
    """Gauges read from SQL and Redis at scrape time (a few short queries)."""

    def __init__(self, engine: Engine, redis_client: Any, settings: Settings) -> None:
        self.engine = engine
        self.redis = redis_client
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        items = GaugeMetricFamily(
            "qocr_batch_items",
            "Queued and running items of each running batch.",
            labels=["batch", "state"],
        )
        running = GaugeMetricFamily("qocr_batches_running", "Batches in the running state.")
        pending = GaugeMetricFamily(
            "qocr_webhook_deliveries_pending", "Completion webhooks not delivered yet."
        )
        models: set[str] = {self.settings.model}
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(Batch.id, Batch.model)
                    .where(Batch.state == BatchState.RUNNING)
                    .order_by(Batch.id.desc())
                    .limit(MAX_BATCHES)
                ).all()
                counts = item_counts(conn, [row.id for row in rows])
                running_total = conn.scalar(
                    select(func.count()).select_from(Batch).where(Batch.state == BatchState.RUNNING)
                )
                waiting = conn.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.state == DeliveryState.PENDING)
                )
        except Exception:
            log.warning("metrics: the database did not answer", exc_info=True)
        else:
            for row in rows:
                models.add(row.model)
                for state in (ItemState.QUEUED, ItemState.RUNNING):
                    items.add_metric([str(row.id), state.value], counts[row.id][state])
            running.add_metric([], int(running_total or 0))
            pending.add_metric([], int(waiting or 0))
            yield items
            yield running
            yield pending
        yield from self._limits(sorted(models))

    def _limits(self, models: list[str]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        rpm = GaugeMetricFamily(
            "qocr_rate_limit_requests_per_minute",
            "The fleet's request rate in force per model (limit x throttle factor).",
            labels=["model"],
        )
        tpm = GaugeMetricFamily(
            "qocr_rate_limit_tokens_per_minute",
            "The fleet's token rate in force per model (limit x throttle factor).",
            labels=["model"],
        )
        paused = GaugeMetricFamily(
            "qocr_throttle_paused_seconds",
            "Seconds every caller still waits on a Retry-After, per model.",
            labels=["model"],
        )
        now = time.time()
        for model in models:
            try:
                state = self._throttle_state(model)
            except Exception:
                log.warning("metrics: Redis did not answer", exc_info=True)
                return
            factor = current_factor(state, now) * HEADROOM
            spec = model_spec(model)
            rpm.add_metric([model], (self.settings.rpm or spec.rpm) * factor)
            tokens = self.settings.tpm or spec.tpm
            if tokens:
                tpm.add_metric([model], tokens * factor)
            paused.add_metric([model], max(state.paused_until - now, 0.0))
        yield rpm
        yield tpm
        yield paused

    def _throttle_state(self, model: str) -> GcraState:
        """The throttle's hash (worker/throttle_redis.py); absent: no 429 lately."""
        raw = self.redis.hmget(THROTTLE_PREFIX + model, "factor", "pat", "pause")
        factor, penalized_at, paused_until = (float(v) if v is not None else None for v in raw)
        return GcraState(
            factor=1.0 if factor is None else factor,
            penalized_at=penalized_at or 0.0,
            paused_until=paused_until or 0.0,
        )


def serve(port: int, host: str, settings: Settings, directory: Path) -> Any:
    """Count into ``directory`` (every process forked from now on too) and serve
    ``/metrics`` on ``host:port`` from a daemon thread; returns the server."""
    import redis
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from qocr.models.db import make_engine

    metrics.enable(directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    engine = make_engine(settings.database_url, pool_size=2, max_overflow=0)
    registry.register(
        FleetCollector(engine, redis.Redis.from_url(settings.effective_redis_url), settings)
    )
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics (%s)", host, port, directory)
    return server
