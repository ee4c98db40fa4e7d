"""Model Studio Batch API's fixed facts, with no imports: shared by the client and the emulator.

One JSONL file per provider batch: at most 50,000 lines, 500 MB, 6 MB a line, one model,
every line's ``url`` the batch's endpoint; completion window 24 h (Alibaba's Batch pages,
January 2026). The test model ``batch-test-model`` has an endpoint of its own.
"""

from __future__ import annotations

ENDPOINT = "/v1/chat/completions"
TEST_MODEL = "batch-test-model"
TEST_ENDPOINT = "/v1/chat/ds-test"
COMPLETION_WINDOW = "24h"
COMPLETION_WINDOW_SECONDS = 24 * 3600
FILE_PURPOSE = "batch"

MAX_LINES = 50_000
MAX_FILE_BYTES = 500 * 1024 * 1024
MAX_LINE_BYTES = 6 * 1024 * 1024

# What a successful Batch API request costs, as a share of the realtime price.
BATCH_PRICE_RATE = 0.5
