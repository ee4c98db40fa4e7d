"""``qocr worker`` with other throttle constants, to measure a proposed change before making it.

    BENCH_GCRA_PENALTY=0.9 BENCH_GCRA_RECOVERY_SECONDS=10 \\
        python bench/experiments/patched_worker.py --pool threads -c 32

With ``BENCH_FAST_STORE=1`` the worker's store is ``fast_store.FastStore``; with
``BENCH_HTTP_MAX_CONNECTIONS=N`` its HTTP client pools N connections; with
``BENCH_LEARN_URL_TOKENS=1`` URL sources are estimated from the image tokens seen so far;
with ``BENCH_SETTLE_UP_ONLY=1`` the throttle is never given tokens back after a call. Sets
``worker.gcra.PENALTY`` / ``RECOVERY_SECONDS`` / ``MIN_FACTOR`` and
``worker.throttle.HEADROOM`` from ``BENCH_GCRA_*`` / ``BENCH_THROTTLE_HEADROOM`` before the
Redis backend's Lua scripts are built from them (at import of ``worker.throttle_redis``),
then runs ``qocr worker ARGS`` in this process. Nothing in the pipeline code changes; this
only exists so that bench/RESULTS.md can show the effect of the change it proposes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import worker.gcra as gcra
import worker.throttle as throttle

if "worker.throttle_redis" in sys.modules:
    raise SystemExit("worker.throttle_redis was imported before the constants were patched")

for name, attribute in (
    ("BENCH_GCRA_PENALTY", "PENALTY"),
    ("BENCH_GCRA_RECOVERY_SECONDS", "RECOVERY_SECONDS"),
    ("BENCH_GCRA_MIN_FACTOR", "MIN_FACTOR"),
):
    if os.environ.get(name):
        setattr(gcra, attribute, float(os.environ[name]))
if os.environ.get("BENCH_THROTTLE_HEADROOM"):
    throttle.HEADROOM = float(os.environ["BENCH_THROTTLE_HEADROOM"])

if os.environ.get("BENCH_FAST_STORE"):
    # The store with prebuilt Core statements (bench/experiments/fast_store.py).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fast_store import FastStore

    import worker.runtime as runtime

    runtime.Store = FastStore  # type: ignore[misc]

if os.environ.get("BENCH_HTTP_MAX_CONNECTIONS"):
    # The worker's HTTP pool size (QwenOCRClient's default is 20, below -c 32).
    import functools

    import worker.runtime as runtime

    runtime.QwenOCRClient = functools.partial(  # type: ignore[misc]
        runtime.QwenOCRClient, max_connections=int(os.environ["BENCH_HTTP_MAX_CONNECTIONS"])
    )

if os.environ.get("BENCH_LEARN_URL_TOKENS"):
    # The URL token estimate the report proposes: the worst case until a URL image of the
    # model has been answered, then an average of what they cost (see RESULTS.md).
    import worker.process as process

    learned: dict[str, float] = {}
    original_estimate = process.ItemProcessor._estimate
    original_result_row = process.result_row

    def estimate(self: Any, plan: Any, image: Any) -> int:
        worst: int = original_estimate(self, plan, image)
        model = plan.options.model
        if image.info is None and model in learned:
            full = process.max_image_tokens(model, plan.options.max_pixels)
            return worst - full + int(learned[model])
        return worst

    def result_row(result: Any, latency_ms: float, sha256: Any, fingerprint: str) -> Any:
        usage = result.usage
        if sha256 is None and usage is not None and usage.image_tokens and result.model:
            previous = learned.get(result.model)
            tokens = usage.image_tokens
            learned[result.model] = tokens if previous is None else 0.8 * previous + 0.2 * tokens
        return original_result_row(result, latency_ms, sha256, fingerprint)

    process.ItemProcessor._estimate = estimate  # type: ignore[method-assign]
    process.result_row = result_row

if os.environ.get("BENCH_SETTLE_UP_ONLY"):
    # Settle only when a call used more tokens than reserved: a refund moves the token TAT
    # behind slots already granted to waiting calls, which then start together.
    original_settle = throttle.Throttle.settle

    def settle(
        self: throttle.Throttle, model: str, limits: Any, estimated: int, actual: int
    ) -> None:
        if actual > estimated:
            original_settle(self, model, limits, estimated, actual)

    throttle.Throttle.settle = settle  # type: ignore[method-assign]

print(
    f"patched: SETTLE_UP_ONLY={bool(os.environ.get('BENCH_SETTLE_UP_ONLY'))} "
    f"LEARN_URL_TOKENS={bool(os.environ.get('BENCH_LEARN_URL_TOKENS'))} "
    f"HTTP_MAX_CONNECTIONS={os.environ.get('BENCH_HTTP_MAX_CONNECTIONS')} "
    f"FAST_STORE={bool(os.environ.get('BENCH_FAST_STORE'))} "
    f"PENALTY={gcra.PENALTY} RECOVERY_SECONDS={gcra.RECOVERY_SECONDS} "
    f"MIN_FACTOR={gcra.MIN_FACTOR} HEADROOM={throttle.HEADROOM}",
    flush=True,
)

from qocr.cli import main  # noqa: E402

sys.argv = ["qocr", "worker", *sys.argv[1:]]
main()
