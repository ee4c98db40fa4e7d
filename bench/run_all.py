"""Run every benchmark, collect their JSON, and write the results file.

    python bench/run_all.py            # full size (about an hour on 2 cores; see README)
    python bench/run_all.py --quick    # laptop / CI size (about 2 minutes)
    python bench/run_all.py --only saturation --only recovery

Each benchmark runs as its own process (``python bench/NAME.py [--quick] --json-out ...``)
with a time bound; its output goes to ``bench/out/<stamp>/NAME.txt`` and its figures to
``NAME.json`` there. ``bench/status_latency.py`` (``qocr status`` on a million-item batch,
owned separately) is called too, and its printed figures are parsed into
``status_latency.json``. Finally ``report.py`` renders ``RESULTS.md`` from that folder: into
``bench/RESULTS.md`` for a full run, into the run folder for ``--quick`` (a smoke run does
not overwrite the recorded figures) unless ``--results`` says where.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
ORDER = ("saturation", "overhead", "scale", "recovery", "status_latency")
# Upper bounds in seconds per benchmark: (quick, full).
TIME_LIMITS = {
    "saturation": (240, 3600),
    "overhead": (240, 1800),
    "scale": (240, 7200),
    "recovery": (240, 1200),
    "status_latency": (300, 3600),
}
STATUS_QUICK_ITEMS = 20_000


def run_one(name: str, quick: bool, out: Path, extra: list[str]) -> dict[str, Any]:
    """Run one benchmark; returns a small record of how it went."""
    script = BENCH / f"{name}.py"
    if not script.exists():
        return {"name": name, "status": "missing", "script": str(script)}
    json_path = out / f"{name}.json"
    log_path = out / f"{name}.txt"
    if name == "status_latency":
        args = ["--runs", "3" if quick else "5"]
        if quick:
            args += ["--items", str(STATUS_QUICK_ITEMS)]
    else:
        args = ["--json-out", str(json_path), *(["--quick"] if quick else [])]
    limit = TIME_LIMITS[name][0 if quick else 1]
    started = time.monotonic()
    print(f"== {name} ({'quick' if quick else 'full'}; at most {limit} s)", flush=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [PYTHON, str(script), *args, *extra],
            cwd=BENCH.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | str = process.wait(limit)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the benchmark unwinds, stopping its workers and dropping its
            # scratch database; then the whole group.
            code = "timeout"
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    elapsed = round(time.monotonic() - started, 1)
    record: dict[str, Any] = {"name": name, "status": code, "seconds": elapsed}
    if name == "status_latency" and code == 0:
        document = parse_status_latency(log_path.read_text(errors="replace"))
        document["quick"] = quick
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        record["tail"] = tail
        print("\n".join(tail), flush=True)
    print(f"   {name}: {code} in {elapsed} s", flush=True)
    return record


def parse_status_latency(text: str) -> dict[str, Any]:
    """The figures ``bench/status_latency.py`` prints, as JSON (its own lines kept too)."""
    document: dict[str, Any] = {"bench": "status_latency", "lines": text.splitlines()[-12:]}
    patterns = {
        "cold_ms": r"^cold\s+([\d,.]+) ms",
        "warm_median_ms": r"^warm\s+([\d,.]+) ms",
        "startup_floor_ms": r"start-up floor[^:]*:\s*([\d,.]+) ms",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            document[key] = float(match.group(1).replace(",", ""))
    match = re.search(r"^queries alone, warm, median: (.*)$", text, re.MULTILINE)
    if match:
        document["queries_ms"] = {
            name.strip(): float(ms)
            for name, ms in re.findall(r"([^,]+?) ([\d.]+) ms", match.group(1))
        }
    match = re.search(r"^batch (\d+): ([\d,]+) items", text, re.MULTILINE)
    if match:
        document["items"] = int(match.group(2).replace(",", ""))
    match = re.search(r"^machine: (.*)$", text, re.MULTILINE)
    if match:
        document["machine_line"] = match.group(1)
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Laptop / CI size.")
    parser.add_argument("--only", action="append", choices=ORDER, help="Run only these.")
    parser.add_argument("--out", type=Path, help="Folder for logs and JSON (default: new).")
    parser.add_argument("--results", type=Path, help="Where to write RESULTS.md.")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH / "out" / f"{'quick' if args.quick else 'full'}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    records = [run_one(name, args.quick, out, []) for name in (args.only or ORDER)]
    (out / "run_all.json").write_text(json.dumps(records, indent=2) + "\n")
    results = args.results or (out / "RESULTS.md" if args.quick else BENCH / "RESULTS.md")
    report = subprocess.run(
        [PYTHON, str(BENCH / "report.py"), str(out), "--output", str(results)],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(report.stdout, end="")
    if report.returncode != 0:
        print(report.stderr, file=sys.stderr)
    failed = [r["name"] for r in records if r["status"] not in (0, "missing")]
    print(f"logs and JSON: {out}\nresults: {results}")
    if failed or report.returncode != 0:
        print(f"failed: {', '.join(failed) or 'report'}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
