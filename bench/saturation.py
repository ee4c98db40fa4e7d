"""Limit saturation: how close qocr runs to the provider's RPM / TPM limit, and how many 429s.

    python bench/saturation.py [--quick] [--scenario rpm600 --scenario tpm] [--json-out F]

Per scenario, in one run and on one emulator configuration, two systems are measured:

* **qocr**: ``qocr submit`` of a folder of distinct 800x1000 PNGs, then two ``qocr worker
  --pool threads -c 32`` processes with ``QOCR_RPM`` / ``QOCR_TPM`` set to the limit;
* **baseline**: ``bench/baselines/asyncio_semaphore.py`` (one asyncio process, a semaphore,
  a fixed sleep of 60/R between calls) over the same folder.

Scenario ``rpm1200url`` sends http URLs instead (a manifest; the emulator answers with
800x1000 placeholders) with the model's default TPM, where qocr must estimate each image at
the model's largest size until it is settled.

The emulator enforces the limit per second (R/60 requests, T/60 tokens in any one-second
window) and answers after 0.5-3 s. Figures come from the emulator's ``/_stats``: successful
calls admitted per minute in the steady window (first success + warm-up, for ``window``
seconds; the drain is never reached because there are more items than the window needs),
divided by R (for TPM: tokens per minute divided by T), and the share of requests answered
429 over the whole run. The median of 10-second bins is given beside the window mean.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as bl

PAGE = (800, 1000)  # ~32 KB PNG, ~834 tokens per call on qwen-vl-ocr-latest (hash recognizer)
TOKENS_PER_CALL_GUESS = 834
LATENCY_MS = (500.0, 3000.0)
LATENCY = LATENCY_MS  # the emulator's latency in this run (--latency-ms)
WORKERS = 2
WORKER_CONCURRENCY = 32
BASELINE_CONCURRENCY = 64
BIN_SECONDS = 10.0
LOCK_KEY = "qocr:dispatcher:lock"  # scheduler.dispatch.LOCK_KEY


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "rpm" or "tpm": which limit binds
    limit: int  # R requests/min, or T tokens/min
    emulator_rpm: int | None
    emulator_tpm: int | None
    qocr_rpm: int
    qocr_tpm: int | None
    # Sources as http URLs (the emulator answers with placeholders of the same size) rather
    # than local files: qocr then estimates the model's largest image for the TPM budget.
    urls: bool = False

    @property
    def calls_per_second(self) -> float:
        if self.kind == "rpm":
            return self.limit / 60
        return self.limit / TOKENS_PER_CALL_GUESS / 60


SCENARIOS = {
    "rpm600": Scenario("rpm600", "rpm", 600, 600, None, 600, None),
    "rpm1200": Scenario("rpm1200", "rpm", 1200, 1200, None, 1200, None),
    # T = 500k tokens/min binds at ~600 calls/min; the RPM limit (3000) is far above it.
    "tpm500k": Scenario("tpm500k", "tpm", 500_000, 3000, 500_000, 3000, 500_000),
    # URL sources at R = 1200 with the model's default TPM (6M): does the TPM estimate bind?
    "rpm1200url": Scenario("rpm1200url", "rpm", 1200, 1200, None, 1200, None, urls=True),
}
URL = "http://docs.example.com/bench/page-{:07d}-tps-800-1000.png"


def steady_figures(
    stats: dict[str, Any], scenario: Scenario, warmup: float, window: float
) -> dict[str, Any]:
    """Rates in the steady window, from the emulator's admission times of successes."""
    times = sorted(float(t) for t in stats["success_times"])
    requests = int(stats["requests"])
    throttled = int(stats["by_status"].get("429", 0))
    figures: dict[str, Any] = {
        "requests": requests,
        "successes": int(stats["successes"]),
        "status_429": throttled,
        "share_429": round(throttled / requests, 4) if requests else None,
        "max_successes_in_any_second": stats.get("max_successes_in_any_second"),
        "by_status": stats["by_status"],
    }
    if len(times) < 2:
        figures["error"] = "fewer than two successes"
        return figures
    start = times[0] + warmup
    end = start + window
    shortened = False
    if end > times[-1]:
        end, shortened = times[-1], True
    span = end - start
    in_window = [t for t in times if start <= t < end]
    per_minute = len(in_window) / span * 60 if span > 0 else 0.0
    bins = int(span // BIN_SECONDS)
    bin_rates = [
        sum(1 for t in in_window if start + i * BIN_SECONDS <= t < start + (i + 1) * BIN_SECONDS)
        / BIN_SECONDS
        * 60
        for i in range(bins)
    ]
    # The whole run in 10-second bins from the first success (warm-up and tail included).
    series = [0] * (int((times[-1] - times[0]) // BIN_SECONDS) + 1)
    for t in times:
        series[int((t - times[0]) // BIN_SECONDS)] += 1
    figures["per_minute_by_10s_bin"] = [round(n / BIN_SECONDS * 60) for n in series]
    successes = max(1, int(stats["successes"]))
    tokens_per_call = stats["tokens"]["total"] / successes
    if scenario.kind == "rpm":
        achieved, median_bin = per_minute, bl.median(bin_rates)
    else:
        achieved = per_minute * tokens_per_call
        median_bin = None if not bin_rates else bl.median(bin_rates) * tokens_per_call
    figures.update(
        {
            "window_s": round(span, 1),
            "window_shortened": shortened,
            "successes_in_window": len(in_window),
            "calls_per_minute": round(per_minute, 1),
            "tokens_per_call": round(tokens_per_call, 1),
            "achieved_per_minute": round(achieved, 1),
            "ratio": round(achieved / scenario.limit, 4),
            "median_10s_ratio": None
            if median_bin is None
            else round(median_bin / scenario.limit, 4),
        }
    )
    return figures


def wait_steady(
    emulator: bl.Emulator,
    warmup: float,
    window: float,
    alive: Callable[[], bool],
    start_timeout: float,
) -> None:
    """Return once the steady window is over and its slowest answers are in.

    A success is stamped with its admission time but recorded when it is answered, up to
    ``LATENCY_MS[1]`` later: wait that long past the window's end.
    """
    started = time.time()
    first: float | None = None
    settle = LATENCY[1] / 1000 + 1.0
    while True:
        if not alive():
            return
        now = time.time()
        if first is None:
            times = emulator.stats()["success_times"]
            if times:
                first = min(float(t) for t in times[:100])
            elif now - started > start_timeout:
                raise RuntimeError(f"no successful call within {start_timeout:.0f} s")
        elif now > first + warmup + window + settle:
            return
        time.sleep(1.0)


def fleet_ready(broker_url: str, timeout: float = 90) -> bool:
    """True once a worker's dispatcher holds the fleet lock (the workers are consuming)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, timeout, 0.2)
    finally:
        client.close()


def run_qocr(
    scenario: Scenario,
    source: str,
    warmup: float,
    window: float,
    workdir: Path,
) -> dict[str, Any]:
    """Two workers up first (a running fleet), then ``qocr submit`` of the folder."""
    limits = {"QOCR_RPM": str(scenario.qocr_rpm)}
    if scenario.qocr_tpm:
        limits["QOCR_TPM"] = str(scenario.qocr_tpm)
    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(bl.REDIS_DB_PIPELINE) as broker_url,
        bl.emulator(
            workdir / f"emulator-qocr-{scenario.name}.log",
            rpm=scenario.emulator_rpm,
            tpm=scenario.emulator_tpm,
            latency_ms=LATENCY,
        ) as emu,
    ):
        deployment = bl.Deployment(workdir, database_url, broker_url, emu, extra_env=limits)
        workers = [
            deployment.worker(f"qocr-{scenario.name}-{i}", "threads", WORKER_CONCURRENCY)
            for i in range(WORKERS)
        ]
        try:
            if not fleet_ready(broker_url):
                raise RuntimeError("the workers did not start\n" + deployment.logs_tail())
            batch_id, count, submit_s = deployment.submit(source)
            bl.log(f"qocr {scenario.name}: batch {batch_id}, {count} items ({submit_s:.1f} s)")
            wait_steady(
                emu,
                warmup,
                window,
                lambda: all(w.poll() is None for w in workers),
                start_timeout=60,
            )
            stats = emu.stats()
            alive = all(w.poll() is None for w in workers)
        finally:
            # The figures are taken; the scratch database goes away: no graceful drain.
            for worker in workers:
                bl.kill_group(worker)
        figures = steady_figures(stats, scenario, warmup, window)
        first = min(float(t) for t in stats["success_times"]) if stats["success_times"] else 0.0
        rows = deployment.sql(
            "SELECT extract(epoch FROM started_at) FROM attempts WHERE http_status = 429"
        )
        figures["times_429_s_after_first_success"] = sorted(
            round(float(t) - first, 1) for (t,) in rows
        )
        figures["items_submitted"] = count
        figures["workers_alive_at_end"] = alive
        figures["submit_s"] = round(submit_s, 2)
        if not alive:
            figures["logs"] = deployment.logs_tail()
        return figures


def run_baseline(
    scenario: Scenario,
    source: list[str],
    items: int,
    warmup: float,
    window: float,
    workdir: Path,
) -> dict[str, Any]:
    """The asyncio script over the same folder, against a fresh emulator."""
    with bl.emulator(
        workdir / "emulator-baseline.log",
        rpm=scenario.emulator_rpm,
        tpm=scenario.emulator_tpm,
        latency_ms=LATENCY,
    ) as emu:
        rate = ["--rpm", str(scenario.limit)]
        if scenario.kind == "tpm":
            rate = ["--tpm", str(scenario.limit)]
        log_path = workdir / f"baseline-{scenario.name}.log"
        args = [
            bl.PYTHON,
            str(bl.BENCH / "baselines" / "asyncio_semaphore.py"),
            *source,
            "--base-url",
            emu.base_url,
            "--concurrency",
            str(BASELINE_CONCURRENCY),
            "--limit",
            str(items),
            "--out",
            str(workdir / f"baseline-{scenario.name}.jsonl"),
            *rate,
        ]
        process = bl.start_process(args, bl.child_env(), log_path)
        try:
            wait_steady(emu, warmup, window, lambda: process.poll() is None, start_timeout=30)
            stats = emu.stats()
        finally:
            bl.stop_process(process, grace=10)
        figures = steady_figures(stats, scenario, warmup, window)
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("BASELINE_JSON "):
                figures["baseline_counters"] = json.loads(line.split(" ", 1)[1])
        return figures


def main() -> None:
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="Default: all (quick: one)."
    )
    parser.add_argument(
        "--systems",
        default="qocr,baseline",
        help="Which of qocr, baseline to run (comma-separated).",
    )
    parser.add_argument(
        "--latency-ms",
        nargs=2,
        type=float,
        default=LATENCY_MS,
        metavar=("LO", "HI"),
        help="The emulator's latency range (default 500 3000).",
    )
    parser.add_argument("--warmup", type=float, help="Seconds dropped after the first success.")
    parser.add_argument("--window", type=float, help="Seconds of steady state measured.")
    args = parser.parse_args()
    names = args.scenario or (
        ["rpm600"] if args.quick else ["rpm600", "rpm1200", "tpm500k", "rpm1200url"]
    )
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 20.0)
    window = args.window if args.window is not None else (5.0 if args.quick else 60.0)
    global LATENCY
    LATENCY = (float(args.latency_ms[0]), float(args.latency_ms[1]))
    systems = set(args.systems.split(","))
    machine = bl.machine_info()
    bl.print_machine(machine)
    workdir = bl.run_dir("saturation")
    results: dict[str, Any] = {}
    for name in names:
        scenario = SCENARIOS[name]
        # Enough items that the window ends long before the batch would: no drain inside it.
        items = math.ceil(scenario.calls_per_second * (warmup + window + 25) * 1.1)
        if scenario.urls:
            manifest = workdir / f"urls-{name}.txt"
            manifest.write_text("".join(URL.format(i) + "\n" for i in range(items)))
            qocr_source, baseline_source = f"@{manifest}", ["--urls", str(manifest)]
        else:
            folder = bl.image_folder(items, PAGE)
            qocr_source, baseline_source = str(folder), [str(folder)]
        bl.log(f"{name}: {items} items, warm-up {warmup:.0f} s, window {window:.0f} s")
        qocr: dict[str, Any] = {}
        if "qocr" in systems:
            qocr = run_qocr(scenario, qocr_source, warmup, window, workdir)
            bl.log(f"{name}: qocr ratio {qocr.get('ratio')} 429 share {qocr.get('share_429')}")
        baseline: dict[str, Any] = {}
        if "baseline" in systems:
            baseline = run_baseline(scenario, baseline_source, items, warmup, window, workdir)
            bl.log(f"{name}: baseline ratio {baseline.get('ratio')} {baseline.get('share_429')}")
        results[name] = {
            "kind": scenario.kind,
            "sources": "http URLs" if scenario.urls else "local PNG files",
            "limit": scenario.limit,
            "emulator_rpm": scenario.emulator_rpm,
            "emulator_tpm": scenario.emulator_tpm,
            "qocr": qocr,
            "baseline": baseline,
            "target": "ratio >= 0.95 and share_429 <= 0.02",
            "qocr_meets_target": bool(
                qocr.get("ratio", 0) >= 0.95 and (qocr.get("share_429") or 0) <= 0.02
            ),
        }
    document = {
        "bench": "saturation",
        "quick": args.quick,
        "machine": machine,
        "config": {
            "page_px": list(PAGE),
            "latency_ms": list(LATENCY),
            "workers": WORKERS,
            "worker_pool": "threads",
            "worker_concurrency": WORKER_CONCURRENCY,
            "baseline_concurrency": BASELINE_CONCURRENCY,
            "warmup_s": warmup,
            "window_s": window,
        },
        "scenarios": results,
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
