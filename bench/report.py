"""Render RESULTS.md from the JSON documents of one ``run_all.py`` run.

    python bench/report.py bench/out/full-20261125-160000 [--output bench/RESULTS.md]

Every figure in the generated part comes from the JSON files in the folder
(``saturation.json``, ``overhead.json``, ``scale.json``, ``recovery.json``,
``status_latency.json``; missing ones are reported as not run). Hand-written notes in an
existing output file, below the ``NOTES_MARKER`` line, are kept as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NOTES_MARKER = "<!-- Hand-written notes below this line are kept by bench/report.py -->"


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    if not path.exists():
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def mark(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_lines(documents: dict[str, dict[str, Any] | None]) -> list[str]:
    first = next((d["machine"] for d in documents.values() if d and "machine" in d), None)
    if first is None:
        return ["No benchmark JSON found."]
    tree = f"commit `{first['git_commit']}`"
    if first.get("git_dirty"):
        tree += " plus uncommitted changes"
        if first.get("git_tree_digest"):
            tree += f" (tree digest `{first['git_tree_digest']}`)"
    lines = [
        f"- Date: {first['date']} (UTC); {tree}.",
        f"- Machine: {first['cpu']}, {first['cores']} cores, {first['ram_gib']} GiB RAM, "
        f"{first['os']}; Python {first['python']}, Redis {first['redis']}, "
        f"PostgreSQL {first['postgresql']}, Celery {first['celery']} / kombu {first['kombu']}.",
        "- Each benchmark's start (UTC), commit, and load average (1/5/15 min) then: "
        + "; ".join(
            f"{name} {d['machine']['date'][11:19]} `{d['machine']['git_commit']}`"
            f"{'+dirty' if d['machine'].get('git_dirty') else ''} "
            f"{d['machine']['load_avg_1_5_15']}"
            for name, d in documents.items()
            if d and "machine" in d
        )
        + " (the machine is shared with other work; the tree moved during the run).",
    ]
    quick = [name for name, d in documents.items() if d and d.get("quick")]
    if quick:
        lines.append(f"- **Quick size** (smoke run, not the recorded figures): {', '.join(quick)}.")
    return lines


def saturation_section(
    doc: dict[str, Any] | None, title: str = "## 1. Limit saturation"
) -> tuple[list[str], list[list[str]]]:
    lines = [title, ""]
    targets: list[list[str]] = []
    if doc is None:
        return [*lines, "Not run.", ""], targets
    config = doc["config"]
    if title != "## 1. Limit saturation":
        machine = doc["machine"]
        lines += [
            f"A separate run: {machine['date']} UTC, commit `{machine['git_commit']}`, "
            f"load {machine['load_avg_1_5_15']}.",
            "",
        ]
    lines += [
        f"Emulator latency {config['latency_ms'][0]:.0f}-{config['latency_ms'][1]:.0f} ms; "
        f"qocr: {config['workers']} workers `--pool {config['worker_pool']} "
        f"-c {config['worker_concurrency']}`; baseline: one asyncio process, semaphore "
        f"{config['baseline_concurrency']}, sleep 60/R. Steady window: {config['window_s']:.0f} s "
        f"after a {config['warmup_s']:.0f} s warm-up from the first success. Ratio = achieved "
        "per minute / limit (for TPM: tokens per minute / T); 429 share over the whole run.",
        "",
    ]
    rows = []
    for name, scenario in doc["scenarios"].items():
        systems = [("qocr", scenario["qocr"]), ("baseline (asyncio + sleep)", scenario["baseline"])]
        for label, figures in systems:
            if not figures:
                continue  # not run in this run (--systems)
            rows.append(
                [
                    f"{name} ({scenario['kind'].upper()} {scenario['limit']:,})",
                    label,
                    fmt(figures.get("calls_per_minute"), 1),
                    fmt(figures.get("ratio"), 3),
                    fmt(figures.get("median_10s_ratio"), 3),
                    pct(figures.get("share_429"), 2),
                    f"{figures.get('status_429', '–')} / {figures.get('requests', '–')}",
                ]
            )
        qocr = scenario["qocr"]
        if not qocr or title != "## 1. Limit saturation":
            continue  # the targets table takes the main run's figures only
        targets.append(
            [
                f"1. saturation {name}",
                "≥ 0.95 of the limit, ≤ 2 % 429",
                f"{fmt(qocr.get('ratio'), 3)}, {pct(qocr.get('share_429'), 2)}",
                mark(scenario.get("qocr_meets_target")),
            ]
        )
    lines += table(
        [
            "scenario",
            "system",
            "calls/min",
            "ratio",
            "10-s median ratio",
            "429 share",
            "429s / requests",
        ],
        rows,
    )
    lines += ["", "Successful calls per minute in 10-second bins from the first success:", ""]
    for name, scenario in doc["scenarios"].items():
        figures = scenario.get("qocr")
        if figures and figures.get("per_minute_by_10s_bin"):
            times = figures.get("times_429_s_after_first_success", [])
            shown = f"{times[:12]}{' ...' if len(times) > 12 else ''}"
            lines.append(
                f"- {name} qocr: {figures['per_minute_by_10s_bin']}; "
                f"{figures.get('status_429')} 429s, the first at {shown} s"
            )
    return [*lines, ""], targets


CPU_ROLES = ("machine", "worker", "postgres", "emulator", "redis")


def overhead_section(doc: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    lines = ["## 2. Overhead", ""]
    if doc is None:
        return [*lines, "Not run.", ""], []
    config, floor, qocr = doc["config"], doc["floor"], doc["qocr"]
    lines += [
        f"{config['items']:,} items, `--pool {config['pool']} -c {config['concurrency']}`, "
        f"{config['emulator']}; rate over the {config['rate']}.",
        "",
    ]
    call_floor = doc.get("call_floor")
    rows = [["bare Celery no-op (floor)", fmt(floor["items_per_second"], 1), "1.000", ""]]
    if call_floor is not None:
        rows.append(
            [
                "Celery + one Qwen-OCR call, nothing else (call floor)",
                fmt(call_floor["items_per_second"], 1),
                fmt(doc["call_floor_ratio"], 3),
                "1.000",
            ]
        )
    rows.append(
        [
            "qocr pipeline",
            fmt(qocr["items_per_second"], 1),
            fmt(doc["ratio"], 3),
            fmt(doc.get("ratio_to_call_floor"), 3),
        ]
    )
    lines += table(["system", "items/s", "ratio to floor", "ratio to call floor"], rows)
    systems = [("floor", floor), ("call floor", call_floor), ("qocr", qocr)]
    cpu_rows = [
        [name, *(fmt(figures.get("cpu_ms_per_item", {}).get(role), 2) for role in CPU_ROLES)]
        for name, figures in systems
        if figures is not None and figures.get("cpu_ms_per_item")
    ]
    if cpu_rows:
        lines += ["", "CPU ms per item over the same middle 80 % (machine: all busy time):", ""]
        lines += table(["system", *CPU_ROLES], cpu_rows)
    lines += [
        "",
        "Per item, server side (pipeline run): PostgreSQL "
        + ", ".join(f"{k} {v}" for k, v in qocr.get("pg_per_item", {}).items())
        + "; Redis commands (server-wide) "
        + ", ".join(f"{k} {v}" for k, v in qocr.get("redis_commands_per_item", {}).items())
        + ". Floor Redis commands: "
        + ", ".join(f"{k} {v}" for k, v in floor.get("redis_commands_per_item", {}).items())
        + ".",
        "",
    ]
    profile = doc.get("profile")
    if profile and "by_innermost_library" in profile:
        lines += [
            f"Profile of one worker ({profile['mode']}, {profile['samples']:,} samples; "
            f"that run: {fmt(doc.get('profiled_run_items_per_second'), 1)} items/s):",
            "",
        ]
        lines += table(
            ["innermost library", "share of CPU samples"],
            [[k, pct(v)] for k, v in profile["by_innermost_library"].items()],
        )
        consumer = profile.get("main_thread_celery_consumer")
        if consumer is not None:
            lines += ["", f"Main thread (Celery's consumer loop): {pct(consumer)} of samples."]
        lines += ["", "qocr functions, inclusive:", ""]
        lines += table(
            ["function", "share"],
            [[f"`{k}`", pct(v)] for k, v in profile["qocr_functions_inclusive"].items()],
        )
        lines.append("")
    census = doc.get("census")
    if census:
        variants = [k for k, v in census.items() if isinstance(v, dict) and "per_item" in v]
        rows = []
        for variant in variants:
            figures = census[variant]
            per = figures["per_item"]
            rows.append(
                [
                    variant,
                    fmt(figures["cpu_ms_per_item_median"], 2),
                    fmt(figures["wall_ms_per_item_median"], 2),
                    fmt(per.get("sql_statements"), 1),
                    fmt(per.get("sql_commits"), 1),
                    fmt(per.get("pool_checkouts"), 1),
                    fmt(sum(v for k, v in per.items() if k.startswith("redis:")), 1),
                    fmt(per.get("http_connections_opened", 0.0), 2),
                    fmt(figures.get("emulator_cpu_ms_per_call_median"), 2),
                ]
            )
        lines += [
            "Census: `ItemProcessor.process` in one thread, no Celery (median of rounds):",
            "",
        ]
        lines += table(
            [
                "store variant",
                "worker CPU ms/item",
                "wall ms/item",
                "SQL statements",
                "commits",
                "pool check-outs (pre-ping)",
                "Redis commands",
                "new HTTP connections",
                "emulator CPU ms/call",
            ],
            rows,
        )
        top = census.get("cprofile_cumulative_ms_per_item", {})
        if top:
            lines += ["", "cProfile, cumulative ms per item (inflated by the profiler):", ""]
            lines += table(["function", "ms"], [[f"`{k}`", fmt(v, 3)] for k, v in top.items()])
        lines.append("")
    image = doc.get("image_path")
    if image:
        lines += ["Image path per call (prepare + request + JSON body):", ""]
        lines += table(
            ["image", "prepared once ms", "client prepares the data URL again ms"],
            [
                [k, fmt(v["prepare_once_ms"], 3), fmt(v.get("data_url_again_ms"), 3)]
                for k, v in image.items()
            ],
        )
        lines.append("")
    targets = [
        [
            "2. overhead",
            f"{doc['target']} (qocr ÷ bare Celery no-op)",
            fmt(doc["ratio"], 3),
            mark(doc["meets_target"]),
        ]
    ]
    return lines, targets


def scale_section(
    doc: dict[str, Any] | None, status: dict[str, Any] | None
) -> tuple[list[str], list[list[str]]]:
    lines = ["## 3. Scale", ""]
    targets: list[list[str]] = []
    if doc is not None:
        config, redis, database = doc["config"], doc["redis"], doc["database"]
        rss, drain = doc["worker_rss"], doc["drain"]
        lines += [
            f"`qocr submit @manifest` of {config['items']:,} http URLs; worker: {config['worker']} "
            f"({config['emulator']}); drained {drain['done']:,} items "
            f"(target {config['drain_target']:,}) in {fmt(drain['seconds'], 0)} s "
            f"= {fmt(drain['items_per_second'], 1)} items/s.",
            "",
        ]
        rows = [
            [
                "submit wall time",
                f"{fmt(doc['submit_wall_s'], 1)} s ({doc['submit_items_per_s']:,} items/s)",
            ],
            [
                "Redis used_memory peak (submit + drain)",
                f"{fmt(redis['peak_used_memory_mib'])} MiB; "
                f"{fmt(redis['peak_minus_before_mib'])} MiB above the "
                f"{fmt(redis['used_memory_before_mib'])} MiB before",
            ],
            [
                "items table per item (heap + indexes)",
                f"{fmt(database['items_total_bytes_per_item'], 0)} B "
                f"(heap {fmt(database['items_heap_bytes_per_item'], 0)} B)",
            ],
            [
                "results + attempts per finished item",
                f"{fmt(database['results_plus_attempts_bytes_per_finished_item'], 0)} B",
            ],
            ["worker RSS idle, before the submit", f"{fmt(rss.get('idle_before_submit_mib'))} MiB"],
        ]
        for point, value in rss.get("by_items_done", {}).items():
            rows.append(
                [
                    f"worker RSS at {point} of the drain",
                    f"{fmt(value['rss_mib'])} MiB after {value['items']:,} items",
                ]
            )
        rows.append(
            [
                "worker RSS growth after the first 20 %",
                f"{fmt(rss.get('growth_after_20pct_mib'))} MiB "
                f"({fmt(rss.get('growth_mib_per_10k_items'), 3)} MiB per 10k items)",
            ]
        )
        status_here = doc.get("status_on_this_batch", {})
        if "warm_median_ms" in status_here:
            rows.append(
                [
                    "`qocr status` on this batch (new process each)",
                    f"first {status_here['first_ms']} ms, "
                    f"warm median {status_here['warm_median_ms']} ms; interpreter + import "
                    f"floor {status_here['interpreter_and_import_floor_ms']} ms",
                ]
            )
        lines += table(["figure", "measured"], rows)
        lines.append("")
        targets += [
            [
                "3. submit of the manifest",
                "≤ 60 s",
                f"{fmt(doc['submit_wall_s'], 1)} s for {config['items']:,}",
                mark(doc["targets"]["submit_le_60s"]),
            ],
            [
                "3. Redis peak",
                "≤ 50 MB",
                f"{fmt(redis['peak_minus_before_mib'])} MiB above baseline",
                mark(doc["targets"]["redis_peak_le_50mib"]),
            ],
            [
                "3. worker RSS",
                "no growth",
                f"{fmt(rss.get('growth_after_20pct_mib'))} MiB over {drain['done']:,} items",
                "see notes",
            ],
        ]
    else:
        lines += ["scale.py not run.", ""]
    lines += ["`bench/status_latency.py` (its own synthetic batch, owned separately):", ""]
    if status is None:
        lines += ["Not run (or `bench/status_latency.py` missing).", ""]
    else:
        lines += ["```", *status.get("lines", []), "```", ""]
        if "cold_ms" in status:
            ok = status["cold_ms"] <= 200 and status.get("warm_median_ms", 1e9) <= 200
            targets.append(
                [
                    "3. `qocr status` latency",
                    "≤ 200 ms cold and warm",
                    f"cold {fmt(status['cold_ms'], 0)} ms, "
                    f"warm {fmt(status.get('warm_median_ms'), 0)} ms "
                    f"({fmt(status.get('items'), 0)} items)",
                    mark(ok),
                ]
            )
    return lines, targets


def recovery_section(doc: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    lines = ["## 4. Recovery", ""]
    if doc is None:
        return [*lines, "Not run.", ""], []
    config, rerun = doc["config"], doc["rerun_after_s"]
    lines += [
        f"{config['items']:,} items; {config['workers']}; lease {config['lease_seconds']} s; "
        f"latency {config['latency_ms'][0]:.0f}-{config['latency_ms'][1]:.0f} ms.",
        "",
    ]
    lines += table(
        ["figure", "measured"],
        [
            [
                "items done / running at the kill",
                f"{doc['done_at_kill']} / {doc['running_at_kill']}",
            ],
            [
                "items the first dispatcher tick published again (no broker epoch yet)",
                fmt(doc.get("redispatched_by_first_tick")),
            ],
            ["orphans (held by the killed worker)", fmt(doc["orphans"])],
            ["orphans run again", fmt(doc["orphans_rerun"])],
            [
                "seconds until back in the queue: lease expired, reaped (min / median / max)",
                "{} / {} / {}".format(
                    *(
                        fmt(doc.get("returned_to_queue_after_s", {}).get(k))
                        for k in ("min", "median", "max")
                    )
                ),
            ],
            [
                "seconds until run again (min / median / max)",
                f"{fmt(rerun['min'])} / {fmt(rerun['median'])} / {fmt(rerun['max'])}",
            ],
            [
                "lease left at the kill (min / max)",
                f"{fmt(doc['lease_left_at_kill_s']['min'])} / "
                f"{fmt(doc['lease_left_at_kill_s']['max'])} s",
            ],
            [
                "images paid twice (more than twice)",
                f"{doc['images_paid_twice']} ({doc['images_paid_more_than_twice']})",
            ],
            ["paid twice beyond the orphans", fmt(doc["paid_twice_beyond_orphans"])],
            [
                "batch finished; results / items",
                f"{fmt(doc['batch_finished'])}; {doc['results']} / {config['items']}",
            ],
        ],
    )
    targets = [
        [
            "4. re-run after kill -9",
            "≤ 60 s",
            f"max {fmt(rerun['max'])} s",
            mark(doc["targets"]["rerun_max_le_60s"]),
        ],
        [
            "4. paid twice",
            "0 beyond calls in flight at the kill",
            f"{doc['images_paid_twice']} paid twice, {doc['orphans']} orphans",
            mark(doc["targets"]["no_double_pay_beyond_in_flight"]),
        ],
    ]
    return [*lines, ""], targets


def _shown(folder: Path) -> str:
    """The folder relative to the repository when it is inside it."""
    repository = Path(__file__).resolve().parent.parent
    try:
        return str(folder.relative_to(repository))
    except ValueError:
        return str(folder)


def render(folder: Path, previous_notes: str) -> str:
    names = ("saturation", "overhead", "scale", "recovery", "status_latency")
    documents = {name: load(folder, name) for name in names}
    extra = sorted(p.stem for p in folder.glob("saturation_*.json"))
    sections = [
        saturation_section(documents["saturation"]),
        *(
            saturation_section(load(folder, name), f"### 1b. Limit saturation: {name[11:]}")
            for name in extra
        ),
        overhead_section(documents["overhead"]),
        scale_section(documents["scale"], documents["status_latency"]),
        recovery_section(documents["recovery"]),
    ]
    targets = [row for _, rows in sections for row in rows]
    lines = [
        "# qocr benchmark results",
        "",
        f"Generated by `python bench/report.py {_shown(folder)}` "
        "from the JSON the benchmarks wrote (reproduce: `python bench/run_all.py`, see "
        "bench/README.md). Medians and ratios are from one run.",
        "",
        *machine_lines({k: v for k, v in documents.items() if k != "status_latency"}),
        "",
        "## Targets",
        "",
        *table(["figure", "target", "measured", ""], targets),
        "",
    ]
    for section, _ in sections:
        lines += section
    lines += [NOTES_MARKER, previous_notes.rstrip("\n") if previous_notes else ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()
    notes = ""
    if args.output.exists():
        text = args.output.read_text()
        if NOTES_MARKER in text:
            notes = text.split(NOTES_MARKER, 1)[1].lstrip("\n")
    args.output.write_text(render(args.folder.resolve(), notes))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
