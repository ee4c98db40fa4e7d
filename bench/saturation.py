"""Limit saturation: how close qocr runs to the provider's RPM / TPM limit, and how many 429s.

    python bench/saturation.py [--quick] [--scenario rpm600 --scenario adaptive] [--json-out F]

Per scenario, in one run and on one emulator configuration (the strict one: RPM/60 requests
in any one second, TPM tokens in any minute, as the service counts), qocr and, where the
scenario says so, a baseline are measured one after the other:

* **qocr**: ``qocr submit`` of a folder of distinct PNGs, then two ``qocr worker`` processes
  (``--pool threads`` or ``--pool prefork``, :data:`WORKER_CONCURRENCY` each) with
  ``QOCR_RPM`` / ``QOCR_TPM`` set to the configured limit;
* **baseline**: ``bench/baselines/asyncio_semaphore.py`` (one asyncio process, a semaphore,
  a fixed sleep of 60/R between calls) over the same folder, the same request.

Scenarios:

* ``rpm600``, ``rpm1200`` (threads) and ``rpm600-prefork``, ``rpm1200-prefork``: RPM-bound,
  800x1000 pages; the prefork runs share the baseline of their threads run;
* ``tpm``: TPM-bound: 1600x2000 pages, ``max_pixels`` high (~3,100 image tokens a call),
  ``table_parsing`` (the longest answers the emulator gives), T = 1,000,000;
* ``adaptive``: configured 1,200 RPM against an account allowed 600 (the emulator's
  ``--rpm 600``), raised to 1,200 while it runs (``POST /_limits``) :data:`RAISE_AFTER_S`
  after the first success. Figures: when the fleet settled at >= 0.9 of 600, its rate from
  60 s to the raise, how long after the raise it reached >= 0.9 of 1,200, the whole run's
  429 share, the fleet's rate in force sampled from Redis, and how often a worker logged a
  change of it;
* ``rpm1200url``: URL sources (the emulator answers with 800x1000 placeholders) with the
  model's default TPM, where qocr estimates each image until answers show its size.

Figures come from the emulator's ``/_stats``: successful calls by arrival time in the steady
window (first success + warm-up, for ``window`` seconds; the batch is larger than the window
needs, so the drain never enters it), divided by R (for TPM: tokens per minute divided by
T), and the share of requests answered 429 over the whole run. The median of 10-second bins
is given beside the window mean.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl
import httpx

LATENCY_MS = (500.0, 1500.0)
LATENCY = LATENCY_MS  # the emulator's latency in this run (--latency-ms)
WORKERS = 2
WORKER_CONCURRENCY = 24
BASELINE_CONCURRENCY = 64
BIN_SECONDS = 10.0
LOCK_KEY = "qocr:dispatcher:lock"  # scheduler.dispatch.LOCK_KEY
RAISE_AFTER_S = 150.0  # adaptive: the account's limit is raised this long after the first success
TARGETS = {
    "rpm": "ratio >= 0.98 and share_429 <= 0.01",
    "tpm": "ratio >= 0.95 and share_429 <= 0.02",
    "adaptive": "settled within 60 s at >= 0.9 of 600, run's 429 share <= 0.05, "
    "raise found within 120 s",
}
PAGE = (800, 1000)
LARGE_PAGE = (1600, 2000)
MAX_PIXELS = 30_720_000  # the model's cap: no downscaling, every pixel billed


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "rpm", "tpm" or "adaptive": what binds, what is measured
    limit: int  # R requests/min, or T tokens/min, the account really allows (at first)
    emulator_rpm: int | None
    emulator_tpm: int | None
    qocr_rpm: int
    qocr_tpm: int | None
    pool: str = "threads"
    page: tuple[int, int] = PAGE
    # Submit options (and the same request from the baseline).
    task: str | None = None
    max_pixels: int | None = None
    # Sources as http URLs (the emulator answers with placeholders of the same size) rather
    # than local files: qocr then estimates the model's largest image for the TPM budget.
    urls: bool = False
    baseline: bool = True
    baseline_rate: float | None = None  # the baseline's configured rate (default: limit)
    raised_rpm: int | None = None  # adaptive: the account's limit after RAISE_AFTER_S
    tokens_per_call_guess: int = 834

    @property
    def calls_per_second(self) -> float:
        if self.kind == "tpm":
            return self.limit / self.tokens_per_call_guess / 60
        return max(self.limit, self.raised_rpm or 0) / 60


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("rpm600", "rpm", 600, 600, None, 600, None),
        Scenario("rpm600-prefork", "rpm", 600, 600, None, 600, None, "prefork", baseline=False),
        Scenario("rpm1200", "rpm", 1200, 1200, None, 1200, None),
        Scenario("rpm1200-prefork", "rpm", 1200, 1200, None, 1200, None, "prefork", baseline=False),
        # T = 1M tokens/min binds at ~300 calls/min; the RPM limit (3000) is far above it.
        Scenario(
            "tpm",
            "tpm",
            1_000_000,
            3000,
            1_000_000,
            3000,
            1_000_000,
            page=LARGE_PAGE,
            task="table_parsing",
            max_pixels=MAX_PIXELS,
            tokens_per_call_guess=3_330,
        ),
        Scenario(
            "adaptive", "adaptive", 600, 600, None, 1200, None, baseline_rate=1200, raised_rpm=1200
        ),
        Scenario("rpm1200url", "rpm", 1200, 1200, None, 1200, None, urls=True),
    )
}
FULL = ("rpm600", "rpm600-prefork", "rpm1200", "rpm1200-prefork", "tpm", "adaptive")
URL = "http://docs.example.com/bench/page-{:07d}-tps-800-1000.png"


def bin_series(times: list[float], start: float, end: float) -> list[float]:
    """Successes per minute in 10-second bins of [start, end)."""
    bins = int((end - start) // BIN_SECONDS)
    counts = [0] * max(bins, 0)
    for t in times:
        index = int((t - start) // BIN_SECONDS)
        if start <= t < end and index < bins:
            counts[index] += 1
    return [n / BIN_SECONDS * 60 for n in counts]


def base_figures(stats: dict[str, Any]) -> dict[str, Any]:
    requests = int(stats["requests"])
    throttled = int(stats["by_status"].get("429", 0))
    return {
        "requests": requests,
        "successes": int(stats["successes"]),
        "status_429": throttled,
        "share_429": round(throttled / requests, 4) if requests else None,
        "max_successes_in_any_second": stats.get("max_successes_in_any_second"),
        "by_status": stats["by_status"],
        "by_error_code": stats.get("by_error_code", {}),
    }


def steady_figures(
    stats: dict[str, Any], scenario: Scenario, warmup: float, window: float
) -> dict[str, Any]:
    """Rates in the steady window, from the emulator's arrival times of successes."""
    times = sorted(float(t) for t in stats["success_times"])
    figures = base_figures(stats)
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
    bin_rates = bin_series(in_window, start, end)
    figures["per_minute_by_10s_bin"] = [
        round(r) for r in bin_series(times, times[0], times[-1] + BIN_SECONDS)
    ]
    successes = max(1, int(stats["successes"]))
    tokens_per_call = stats["tokens"]["total"] / successes
    if scenario.kind == "tpm":
        achieved = per_minute * tokens_per_call
        median_bin = None if not bin_rates else bl.median(bin_rates) * tokens_per_call
    else:
        achieved, median_bin = per_minute, bl.median(bin_rates)
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


def adaptive_figures(stats: dict[str, Any], scenario: Scenario, raised_at: float) -> dict[str, Any]:
    """Settling under the account's real limit, and finding it again once it is raised."""
    times = sorted(float(t) for t in stats["success_times"])
    figures = base_figures(stats)
    if len(times) < 2:
        figures["error"] = "fewer than two successes"
        return figures
    first = times[0]
    low, high = scenario.limit, scenario.raised_rpm or scenario.limit
    before = bin_series(times, first, raised_at)
    after = bin_series(times, raised_at, times[-1])
    figures["per_minute_by_10s_bin"] = [round(r) for r in before + after]
    settled = next((i for i in range(len(before)) if all(r >= 0.9 * low for r in before[i:])), None)
    steady = [t for t in times if first + 60 <= t < raised_at]
    found = next((i for i, r in enumerate(after) if r >= 0.9 * high), None)
    tail = after[-6:]
    figures.update(
        {
            "raised_after_s": round(raised_at - first, 1),
            "settled_s": None if settled is None else settled * BIN_SECONDS,
            "ratio_60s_to_raise": round(len(steady) / (raised_at - first - 60) * 60 / low, 4)
            if raised_at - first > 60
            else None,
            "found_raise_s": None if found is None else (found + 1) * BIN_SECONDS,
            "ratio_last_60s": round(bl.median(tail) / high, 4) if tail else None,
        }
    )
    figures["meets_target"] = bool(
        figures["settled_s"] is not None
        and figures["settled_s"] <= 60
        and (figures["ratio_60s_to_raise"] or 0) >= 0.9
        and (figures["share_429"] or 0) <= 0.05
        and figures["found_raise_s"] is not None
        and figures["found_raise_s"] <= 120
    )
    return figures


@dataclass
class Watch:
    """What happens while a run is measured: the emulator's limit switch, fleet samples."""

    raise_to: int | None = None
    raised_at: float | None = None
    sample: Callable[[], dict[str, Any] | None] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


def wait_steady(
    emulator: bl.Emulator,
    until_after_first: float,
    alive: Callable[[], bool],
    start_timeout: float,
    watch: Watch | None = None,
) -> float | None:
    """Return once ``until_after_first`` seconds have passed since the first success and its
    slowest answers are in; the time of the first success.

    A success is stamped with its arrival time but recorded when it is answered, up to
    ``LATENCY_MS[1]`` later: wait that long past the end.
    """
    started = time.time()
    first: float | None = None
    settle = LATENCY[1] / 1000 + 1.0
    last_sample = 0.0
    while True:
        if not alive():
            return first
        now = time.time()
        if first is None:
            times = emulator.stats()["success_times"]
            if times:
                first = min(float(t) for t in times[:100])
            elif now - started > start_timeout:
                raise RuntimeError(f"no successful call within {start_timeout:.0f} s")
        else:
            if watch is not None:
                if watch.raise_to and watch.raised_at is None and now >= first + RAISE_AFTER_S:
                    set_limits(emulator, rpm=watch.raise_to)
                    watch.raised_at = time.time()
                    bl.log(f"account limit raised to {watch.raise_to} RPM")
                if watch.sample is not None and now - last_sample >= 2.0:
                    last_sample = now
                    sample = watch.sample()
                    if sample is not None:
                        watch.samples.append({"t": round(now - first, 1), **sample})
            if now > first + until_after_first + settle:
                return first
        time.sleep(0.5)


def set_limits(emulator: bl.Emulator, **limits: int | None) -> None:
    response = httpx.post(f"{emulator.base_url}/_limits", json=limits, timeout=10)
    response.raise_for_status()


def fleet_ready(broker_url: str, timeout: float = 90) -> bool:
    """True once a worker's dispatcher holds the fleet lock (the workers are consuming)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, timeout, 0.2)
    finally:
        client.close()


def fleet_sampler(broker_url: str, scenario: Scenario) -> Callable[[], dict[str, Any] | None]:
    """The fleet's rate in force and recent 429s, as ``qocr status`` reads them."""
    from qocr.worker.throttle_redis import fleet_rate

    def sample() -> dict[str, Any] | None:
        rate = fleet_rate(broker_url, bl.MODEL, scenario.qocr_rpm, scenario.qocr_tpm)
        if rate is None:
            return None
        return {
            "rpm_in_use": round(rate.requests_per_minute),
            "share_429_60s": None if rate.share_429 is None else round(rate.share_429, 4),
        }

    return sample


def submit_options(scenario: Scenario) -> list[str]:
    options = []
    if scenario.task:
        options += ["--task", scenario.task]
    if scenario.max_pixels:
        options += ["--max-pixels", str(scenario.max_pixels)]
    return options


def rate_changes(workdir: Path, scenario: Scenario) -> list[str]:
    """The workers' log lines saying the fleet's rate changed (once per change)."""
    pattern = re.compile(r"lowers its rate|back at its ceiling")
    lines = []
    for path in sorted(workdir.glob(f"qocr-{scenario.name}-*.log")):
        lines += [ln for ln in path.read_text(errors="replace").splitlines() if pattern.search(ln)]
    return lines


def run_qocr(
    scenario: Scenario,
    source: str,
    warmup: float,
    window: float,
    workdir: Path,
    redis_db: int,
) -> dict[str, Any]:
    """Two workers up first (a running fleet), then ``qocr submit`` of the folder."""
    limits = {"QOCR_RPM": str(scenario.qocr_rpm)}
    if scenario.qocr_tpm:
        limits["QOCR_TPM"] = str(scenario.qocr_tpm)
    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(redis_db) as broker_url,
        bl.emulator(
            workdir / f"emulator-qocr-{scenario.name}.log",
            rpm=scenario.emulator_rpm,
            tpm=scenario.emulator_tpm,
            latency_ms=LATENCY,
        ) as emu,
    ):
        deployment = bl.Deployment(workdir, database_url, broker_url, emu, extra_env=limits)
        workers = [
            deployment.worker(f"qocr-{scenario.name}-{i}", scenario.pool, WORKER_CONCURRENCY)
            for i in range(WORKERS)
        ]
        watch = Watch(raise_to=scenario.raised_rpm, sample=fleet_sampler(broker_url, scenario))
        try:
            if not fleet_ready(broker_url):
                raise RuntimeError("the workers did not start\n" + deployment.logs_tail())
            batch_id, count, submit_s = deployment.submit(source, *submit_options(scenario))
            bl.log(f"qocr {scenario.name}: batch {batch_id}, {count} items ({submit_s:.1f} s)")
            first = wait_steady(
                emu,
                measured_seconds(scenario, warmup, window),
                lambda: all(w.poll() is None for w in workers),
                start_timeout=60,
                watch=watch,
            )
            stats = emu.stats()
            alive = all(w.poll() is None for w in workers)
        finally:
            # The figures are taken; the scratch database goes away: no graceful drain.
            for worker in workers:
                bl.kill_group(worker)
        figures = measure(stats, scenario, warmup, window, watch)
        first = first or 0.0
        rows = deployment.sql(
            "SELECT extract(epoch FROM started_at) FROM attempts WHERE http_status = 429"
        )
        figures["times_429_s_after_first_success"] = sorted(
            round(float(t) - first, 1) for (t,) in rows
        )
        figures["fleet_rate_samples"] = watch.samples
        changes = rate_changes(workdir, scenario)
        figures["rate_changes_logged"] = len(changes)
        figures["rate_change_lines"] = changes[:20]
        figures["items_submitted"] = count
        figures["workers_alive_at_end"] = alive
        figures["submit_s"] = round(submit_s, 2)
        if not alive:
            figures["logs"] = deployment.logs_tail()
        return figures


def measured_seconds(scenario: Scenario, warmup: float, window: float) -> float:
    if scenario.kind == "adaptive":
        return 2 * RAISE_AFTER_S
    return warmup + window


def measure(
    stats: dict[str, Any], scenario: Scenario, warmup: float, window: float, watch: Watch
) -> dict[str, Any]:
    if scenario.kind == "adaptive":
        if watch.raised_at is None:
            return {**base_figures(stats), "error": "the run ended before the limit was raised"}
        return adaptive_figures(stats, scenario, watch.raised_at)
    return steady_figures(stats, scenario, warmup, window)


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
        workdir / f"emulator-baseline-{scenario.name}.log",
        rpm=scenario.emulator_rpm,
        tpm=scenario.emulator_tpm,
        latency_ms=LATENCY,
    ) as emu:
        rate = ["--rpm", str(scenario.baseline_rate or scenario.limit)]
        if scenario.kind == "tpm":
            rate = ["--tpm", str(scenario.limit)]
        request = []
        if scenario.task:
            from qocr.qwen.tasks import task_prompt

            request += ["--prompt", task_prompt(scenario.task, None)]  # type: ignore[arg-type]
        if scenario.max_pixels:
            request += ["--max-pixels", str(scenario.max_pixels)]
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
            *request,
        ]
        process = bl.start_process(args, bl.child_env(), log_path)
        watch = Watch(raise_to=scenario.raised_rpm)
        try:
            wait_steady(
                emu,
                measured_seconds(scenario, warmup, window),
                lambda: process.poll() is None,
                start_timeout=30,
                watch=watch,
            )
            stats = emu.stats()
        finally:
            bl.stop_process(process, grace=10)
        figures = measure(stats, scenario, warmup, window, watch)
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("BASELINE_JSON "):
                figures["baseline_counters"] = json.loads(line.split(" ", 1)[1])
        return figures


def meets_target(scenario: Scenario, figures: dict[str, Any]) -> bool:
    if scenario.kind == "adaptive":
        return bool(figures.get("meets_target"))
    ratio, share = figures.get("ratio") or 0, figures.get("share_429") or 0
    if scenario.kind == "tpm":
        return bool(ratio >= 0.95 and share <= 0.02)
    return bool(ratio >= 0.98 and share <= 0.01)


def sources_for(scenario: Scenario, items: int, workdir: Path) -> tuple[str, list[str]]:
    """The qocr source and the baseline's arguments for the same images."""
    if scenario.urls:
        manifest = workdir / f"urls-{scenario.name}.txt"
        manifest.write_text("".join(URL.format(i) + "\n" for i in range(items)))
        return f"@{manifest}", ["--urls", str(manifest)]
    # One folder per page size, sized for the largest run: generated once, reused.
    count = max(1000, math.ceil(items / 1000) * 1000)
    folder = bl.image_folder(count, scenario.page)
    return str(folder), [str(folder)]


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
        help="The emulator's latency range (default 500 1500).",
    )
    parser.add_argument("--warmup", type=float, help="Seconds dropped after the first success.")
    parser.add_argument("--window", type=float, help="Seconds of steady state measured.")
    parser.add_argument(
        "--redis-db",
        type=int,
        default=bl.REDIS_DB_PIPELINE,
        help=f"Redis database of the workers (default {bl.REDIS_DB_PIPELINE}).",
    )
    args = parser.parse_args()
    names = args.scenario or (["rpm600"] if args.quick else list(FULL))
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 20.0)
    window = args.window if args.window is not None else (5.0 if args.quick else 180.0)
    global LATENCY
    LATENCY = (float(args.latency_ms[0]), float(args.latency_ms[1]))
    systems = set(args.systems.split(","))
    machine = bl.machine_info()
    bl.print_machine(machine)
    workdir = bl.run_dir("saturation")
    results: dict[str, Any] = {}
    for name in names:
        scenario = SCENARIOS[name]
        seconds = measured_seconds(scenario, warmup, window)
        # Enough items that the run ends long before the batch would: no drain inside it.
        items = math.ceil(scenario.calls_per_second * (seconds + 25) * 1.1)
        qocr_source, baseline_source = sources_for(scenario, items, workdir)
        bl.log(f"{name}: {items} items, {seconds:.0f} s measured ({scenario.pool} workers)")
        qocr: dict[str, Any] = {}
        if "qocr" in systems:
            qocr = run_qocr(scenario, qocr_source, warmup, window, workdir, args.redis_db)
            bl.log(f"{name}: qocr ratio {qocr.get('ratio')} 429 share {qocr.get('share_429')}")
        baseline: dict[str, Any] = {}
        if "baseline" in systems and scenario.baseline:
            baseline = run_baseline(scenario, baseline_source, items, warmup, window, workdir)
            bl.log(f"{name}: baseline ratio {baseline.get('ratio')} {baseline.get('share_429')}")
        results[name] = {
            "kind": scenario.kind,
            "pool": scenario.pool,
            "sources": "http URLs" if scenario.urls else "local PNG files",
            "page_px": list(scenario.page),
            "submit_options": submit_options(scenario),
            "limit": scenario.limit,
            "raised_rpm": scenario.raised_rpm,
            "emulator_rpm": scenario.emulator_rpm,
            "emulator_tpm": scenario.emulator_tpm,
            "qocr_rpm": scenario.qocr_rpm,
            "qocr_tpm": scenario.qocr_tpm,
            "qocr": qocr,
            "baseline": baseline,
            "target": TARGETS[scenario.kind],
            "qocr_meets_target": meets_target(scenario, qocr) if qocr else None,
        }
    document = {
        "bench": "saturation",
        "quick": args.quick,
        "machine": machine,
        "config": {
            "latency_ms": list(LATENCY),
            "workers": WORKERS,
            "worker_pool": "threads or prefork (per scenario)",
            "worker_concurrency": WORKER_CONCURRENCY,
            "baseline_concurrency": BASELINE_CONCURRENCY,
            "warmup_s": warmup,
            "window_s": window,
            "raise_after_s": RAISE_AFTER_S,
            "emulator_limits": "strict: RPM/60 in any second, RPM and TPM in any minute",
        },
        "scenarios": results,
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
