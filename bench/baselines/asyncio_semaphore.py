"""What a user writes instead of qocr: one asyncio process, a semaphore, a fixed sleep.

    python bench/baselines/asyncio_semaphore.py --base-url URL --rpm 600 FOLDER

Starts one call every ``60 / rate`` seconds (the user's tuning: the limit's own spacing),
at most ``--concurrency`` in flight, and appends each answer to ``--out`` as a JSON line.
With ``--tpm T`` the rate is what the user derives from one probe call's usage:
``T / tokens_per_call`` calls a minute. A 429 or 5xx is retried after one second (the
emulator, like the service, sends no Retry-After), up to ``--tries`` times. There is no
durability: a crash loses the in-flight calls and the position in the folder.

Prints one ``BASELINE_JSON {...}`` line with its counters when it ends (or is terminated).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

PATH = "/compatible-mode/v1/chat/completions"


def body_for(
    path: Path | str, model: str, prompt: str | None = None, max_pixels: int | None = None
) -> dict[str, Any]:
    if isinstance(path, str):  # an http URL, sent as it is
        url = path
    else:
        url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    # The same request qocr sends with the same options: the image, and the task's prompt.
    image: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if max_pixels:
        image["max_pixels"] = max_pixels
    content = [image]
    if prompt:
        content.append({"type": "text", "text": prompt})
    return {"model": model, "messages": [{"role": "user", "content": content}]}


class Baseline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        self.reported = False

    async def call(self, client: httpx.AsyncClient, path: Path | str) -> dict[str, Any] | None:
        body = body_for(path, self.args.model, self.args.prompt, self.args.max_pixels)
        for _ in range(self.args.tries):
            try:
                response = await client.post(PATH, json=body)
            except httpx.HTTPError as exc:
                self.counters[f"transport_{type(exc).__name__}"] += 1
                await asyncio.sleep(1.0)
                continue
            self.counters[f"http_{response.status_code}"] += 1
            if response.status_code == 429 or response.status_code >= 500:
                await asyncio.sleep(1.0)
                continue
            if response.status_code != 200:
                return None
            document: dict[str, Any] = response.json()
            return document
        self.counters["gave_up"] += 1
        return None

    async def one(self, client: httpx.AsyncClient, path: Path | str, sink: Any) -> None:
        answer = await self.call(client, path)
        if answer is None:
            return
        text = answer["choices"][0]["message"]["content"]
        sink.write(json.dumps({"source": str(path), "text": text, "usage": answer["usage"]}))
        sink.write("\n")
        self.counters["done"] += 1

    async def run(self) -> None:
        args = self.args
        files: list[Path] | list[str]
        if args.urls:
            files = Path(args.urls).read_text().split()
        else:
            files = sorted(Path(args.folder).glob("*.png"))
        files = files[: args.limit or None]
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        headers = {"Authorization": f"Bearer {args.api_key}"}
        async with httpx.AsyncClient(
            base_url=args.base_url, headers=headers, limits=limits, timeout=120
        ) as client:
            with Path(args.out).open("a", encoding="utf-8") as sink:
                rate = float(args.rpm or 0)
                if args.tpm:
                    # The user's tuning: look at one answer's usage, divide the budget by it.
                    probe = await self.call(client, files[0])
                    tokens = probe["usage"]["total_tokens"] if probe else 1000
                    rate = args.tpm / tokens
                    self.counters["probe_tokens"] = tokens
                interval = 60.0 / rate
                self.counters["interval_us"] = int(interval * 1e6)
                semaphore = asyncio.Semaphore(args.concurrency)
                tasks: set[asyncio.Task[None]] = set()
                for path in files:
                    await semaphore.acquire()
                    task = asyncio.create_task(self.one(client, path, sink))
                    tasks.add(task)
                    task.add_done_callback(lambda t: (tasks.discard(t), semaphore.release()))
                    await asyncio.sleep(interval)
                await asyncio.gather(*tasks)

    def report(self) -> None:
        document = {"elapsed_s": round(time.time() - self.started, 3), **self.counters}
        print("BASELINE_JSON " + json.dumps(document), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", help="A folder of PNGs (or give --urls).")
    parser.add_argument("--urls", help="A file of http URLs, one a line, sent as they are.")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sk-baseline")
    parser.add_argument("--model", default="qwen-vl-ocr-latest")
    parser.add_argument("--rpm", type=float, help="Calls a minute: sleep 60/rpm between calls.")
    parser.add_argument("--tpm", type=float, help="Tokens a minute: rate from one probe call.")
    parser.add_argument("--prompt", help="A text part after the image (a task's prompt).")
    parser.add_argument("--max-pixels", type=int, help="The image part's max_pixels.")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="At most this many files.")
    parser.add_argument("--out", default="baseline-results.jsonl")
    args = parser.parse_args()
    if not (args.rpm or args.tpm):
        parser.error("give --rpm or --tpm")
    if not (args.folder or args.urls):
        parser.error("give a FOLDER or --urls FILE")
    baseline = Baseline(args)
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(baseline.run())

    def on_term() -> None:
        # Report what was done before the stop, not the cancelled tail.
        baseline.report()
        baseline.reported = True
        main_task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    try:
        loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        pass
    finally:
        if not baseline.reported:
            baseline.report()
        loop.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
