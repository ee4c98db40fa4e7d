"""PDF pages: a 500-page PDF rendered and sent through a real worker to the emulator.

    python bench/pdf_pages.py [--quick] [--pages N] [-c 2] [--dpi D] [--redis-db 11]

One run, one fresh PostgreSQL database, the emulator unlimited and instant, one
``qocr worker --pool prefork -c C`` (C processes, one page each at a time; PDFium renders
one page at a time per process). First a 2-page PDF warms the worker up (imports, pools,
PDFium loaded); then ``qocr submit`` of an N-page PDF of scanned-like invoice pages (a
letter page at 100 dpi each, every page different). The worker expands it into N page
items, renders each at the size the model's pixel limit allows (the default
``max_pixels``, or ``--dpi``), encodes it (PNG or JPEG, the smaller) and calls the
emulator.

Figures: pages per second (wall, submit to last page), the worker's CPU seconds (every
process of its tree, from /proc) and pages per CPU-second (pages per second per core kept
busy), the emulator's requests (one per page), and the peak RSS growth of each worker
process during the big document over its RSS after the warm-up (the kernel's high-water
mark, reset after the warm-up): what "one page in memory at a time" must keep to a few
pages whatever the document's length. Defaults: 500 pages;
``--quick``: 40.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as bl

RPM_OUT_OF_REACH = "1000000"
TPM_OUT_OF_REACH = "1000000000"
PAGE_PIXELS = (850, 1100)  # a letter page scanned at 100 dpi
LOCK_KEY = "qocr:dispatcher:lock"  # scheduler.dispatch.LOCK_KEY
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def scanned_pdf(pages: int) -> Path:
    """An N-page PDF of scanned-like invoice pages (one image per page); made once, reused."""
    from PIL import Image, ImageDraw

    path = bl.OUT / "documents" / f"invoice-scan-{pages}.pdf"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

    def page(number: int) -> Image.Image:
        image = Image.new("L", PAGE_PIXELS, 255)
        draw = ImageDraw.Draw(image)
        draw.text((60, 50), f"INVOICE INV-2026-{number:05d}", fill=0)
        for row in range(8):
            y = 160 + row * 90
            draw.text((60, y), f"Line {row + 1}: item {number * 8 + row}", fill=0)
            draw.text((640, y), f"{(number * 37 + row * 11) % 1000}.00", fill=0)
        draw.text((60, 1000), f"Page {number} of {pages}", fill=0)
        return image

    first = page(1)
    buffer = io.BytesIO()
    first.save(
        buffer,
        format="PDF",
        save_all=True,
        append_images=(page(n) for n in range(2, pages + 1)),
        resolution=100,
    )
    path.write_bytes(buffer.getvalue())
    return path


def cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and its descendants alive now."""
    total = 0
    for pid in bl.tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak RSS (VmHWM) of ``pid`` to its RSS now (Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of ``pid``'s RSS (VmHWM), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples every process of a tree every ``interval`` seconds; peak RSS per pid (a
    fallback where the kernel's high-water mark cannot be reset: it misses short peaks)."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> dict[int, int]:
        return {pid: bl.rss_bytes(pid) for pid in bl.tree_pids(self.root)}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid, rss in self.snapshot().items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_batch(probe: bl.SqlProbe, batch_id: int, timeout: float) -> bool:
    return bl.wait_until(
        lambda: probe.scalar("SELECT state FROM batches WHERE id = :b", b=batch_id) != "running",
        timeout=timeout,
        interval=0.25,
    )


def fleet_ready(broker_url: str, timeout: float = 90) -> bool:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, timeout, 0.2)
    finally:
        client.close()


def main() -> None:
    parser = bl.base_parser(__doc__ or "")
    parser.add_argument("--pages", type=int, help="Pages of the PDF (default 500; --quick 40).")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="Worker processes.")
    parser.add_argument("--dpi", type=float, help="Render at this DPI (default: max_pixels).")
    parser.add_argument("--redis-db", type=int, default=bl.REDIS_DB_OTHER)
    args = parser.parse_args()
    pages = args.pages or (40 if args.quick else 500)
    info = bl.machine_info()
    bl.print_machine(info)
    workdir = bl.run_dir("pdf-pages")
    big = scanned_pdf(pages)
    warm_up = scanned_pdf(2)
    options = ["--dpi", str(args.dpi)] if args.dpi else []
    env = {"QOCR_RPM": RPM_OUT_OF_REACH, "QOCR_TPM": TPM_OUT_OF_REACH}
    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(args.redis_db) as broker_url,
        bl.emulator(workdir / "emulator.log") as emu,
    ):
        deployment = bl.Deployment(workdir, database_url, broker_url, emu, extra_env=env)
        probe = bl.SqlProbe(database_url)
        worker = deployment.worker("worker", "prefork", args.concurrency)
        try:
            if not fleet_ready(broker_url):
                raise RuntimeError("the worker did not start\n" + deployment.logs_tail())
            warm_id, _, _ = deployment.submit(str(warm_up), *options)
            if not wait_batch(probe, warm_id, 120):
                raise RuntimeError("the warm-up did not finish\n" + deployment.logs_tail())
            with RssSampler(worker.pid) as sampler:
                time.sleep(0.5)
                baseline = sampler.snapshot()
                exact_peaks = all(reset_peak_rss(pid) for pid in baseline)
                cpu_before = cpu_seconds(worker.pid)
                requests_before = int(emu.stats()["requests"])
                batch_id, _, submit_s = deployment.submit(str(big), *options)
                started = time.time()
                bl.log(f"batch {batch_id}: a {pages}-page PDF submitted in {submit_s:.1f} s")
                finished = wait_batch(probe, batch_id, 120 + pages * 5)
                cpu = cpu_seconds(worker.pid) - cpu_before
                if exact_peaks:
                    sampler.peak = {pid: peak_rss_bytes(pid) for pid in baseline}
            last = probe.scalar(
                "SELECT extract(epoch FROM max(finished_at)) FROM items WHERE batch_id = :b",
                b=batch_id,
            )
            wall = float(last) - started if last is not None else time.time() - started
            requests = int(emu.stats()["requests"]) - requests_before
            sizes = probe.rows(
                "SELECT avg(r.image_tokens), min(r.image_tokens), max(r.image_tokens) "
                "FROM results r JOIN items i ON i.id = r.item_id WHERE i.batch_id = :b",
                b=batch_id,
            )[0]
            states = deployment.count_by_state(batch_id)
        finally:
            bl.stop_process(worker, grace=20)
            probe.close()
    growth = {
        pid: sampler.peak.get(pid, rss) - rss for pid, rss in baseline.items() if pid != worker.pid
    }
    bl.log(f"{'done' if finished else 'NOT done'}: {pages} pages in {wall:.1f} s, cpu {cpu:.1f} s")
    document: dict[str, Any] = {
        "benchmark": "pdf_pages",
        "machine": info,
        "pages": pages,
        "pdf_bytes": big.stat().st_size,
        "page_pixels_scanned": list(PAGE_PIXELS),
        "dpi": args.dpi,
        "worker": f"--pool prefork -c {args.concurrency}",
        "finished": finished,
        "states": states,
        "provider_requests": requests,
        "submit_s": round(submit_s, 2),
        "wall_s_submit_to_last_page": round(wall, 2),
        "pages_per_second": round(pages / wall, 2) if wall > 0 else None,
        "worker_cpu_seconds": round(cpu, 1),
        "pages_per_cpu_second": round(pages / cpu, 2) if cpu > 0 else None,
        "image_tokens_per_page": {
            "mean": round(float(sizes[0] or 0)),
            "min": int(sizes[1] or 0),
            "max": int(sizes[2] or 0),
        },
        "rss_after_warm_up_mib": {
            str(pid): round(rss / 2**20, 1) for pid, rss in sorted(baseline.items())
        },
        "peak_rss_growth_mib_per_child": {
            str(pid): round(delta / 2**20, 1) for pid, delta in sorted(growth.items())
        },
        "peak_rss_growth_mib_max": round(max(growth.values(), default=0) / 2**20, 1),
        "peak_rss_measured_by": "kernel VmHWM" if exact_peaks else "sampling every 0.1 s",
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
