"""How a batch reads documents (PDF, multi-page TIFF): which pages, how many at most, what DPI.

Chosen at submit (``--pages 1-3,7``, ``--max-pages N``, ``--dpi N``, the schedule keys
``pages``, ``max_pages``, ``dpi``) and kept in the batch's ``source_options``, beside
``s3_mode``: how sources are read, not what the model is asked. Workers read them back with
:meth:`DocumentOptions.from_source_options` when they expand a document and render its
pages. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qocr.errors import QocrError

# A document with more pages to read than this fails (document_too_many_pages) before any
# page is called; AWS Textract's asynchronous limit, and --max-pages raises or lowers it.
DEFAULT_MAX_PAGES = 3000
MAX_PAGES_CEILING = 100_000
# Render resolutions a user may ask for; the pixel limits of the model still apply.
MIN_DPI = 36.0
MAX_DPI = 1200.0
PAGES_MAX_CHARS = 1000
_RANGE = re.compile(r"^(\d+)(?:\s*(-)\s*(\d+)?)?$")


class DocumentOptionsError(QocrError):
    """A page range, page limit or DPI that is not what it should be."""

    code = "document_option_invalid"


# (first, last) pages, from 1; last None: to the end of the document.
PageRange = tuple[int, int | None]


@dataclass(frozen=True)
class DocumentOptions:
    """``pages``: the ranges to read (empty: every page); ``max_pages``: a document with
    more pages to read fails; ``dpi``: the render resolution (None: what fits the model's
    pixel limit)."""

    pages: tuple[PageRange, ...] = ()
    max_pages: int = DEFAULT_MAX_PAGES
    dpi: float | None = None

    def selected(self, page_count: int) -> list[int]:
        """The pages to read of a document of ``page_count`` pages: in order, each once."""
        if not self.pages:
            return list(range(1, page_count + 1))
        chosen: set[int] = set()
        for first, last in self.pages:
            end = page_count if last is None else min(last, page_count)
            chosen.update(range(first, end + 1))
        return sorted(chosen)

    @property
    def pages_text(self) -> str | None:
        """The ranges as ``1-3,7,9-``; None for every page."""
        if not self.pages:
            return None
        return ",".join(_range_text(first, last) for first, last in self.pages)

    def source_options(self) -> dict[str, Any]:
        """The keys these options add to a batch's ``source_options``."""
        return {"pages": self.pages_text, "max_pages": self.max_pages, "dpi": self.dpi}

    @classmethod
    def from_source_options(cls, data: Mapping[str, Any]) -> DocumentOptions:
        """The options stored on a batch; a batch from before documents gets the defaults."""
        return document_options(data.get("pages"), data.get("max_pages"), data.get("dpi"))


# Every page, up to DEFAULT_MAX_PAGES, at the size the model's pixel limit allows.
DEFAULT_DOCUMENT_OPTIONS = DocumentOptions()


def document_options(pages: Any = None, max_pages: Any = None, dpi: Any = None) -> DocumentOptions:
    """The options for a submit's plain values (None: the default), checked."""
    return DocumentOptions(
        pages=parse_pages(pages) if pages is not None else (),
        max_pages=_max_pages(max_pages),
        dpi=_dpi(dpi),
    )


def parse_pages(text: Any) -> tuple[PageRange, ...]:
    """``"1-3,7,10-"`` → ``((1, 3), (7, 7), (10, None))``; a clear error for anything else."""
    if not isinstance(text, str) or not text.strip() or len(text) > PAGES_MAX_CHARS:
        raise DocumentOptionsError(
            f"pages must be a page list like 1-3,7 or 2- (at most {PAGES_MAX_CHARS} characters)"
        )
    ranges: list[PageRange] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise DocumentOptionsError(
                f"pages: {part.strip()!r} is not a page (7), a range (1-3) or an open range (2-)"
            )
        first = int(match.group(1))
        last: int | None = first
        if match.group(2):
            last = int(match.group(3)) if match.group(3) else None
        if first < 1 or (last is not None and last < first):
            raise DocumentOptionsError(
                f"pages: {part.strip()!r}: pages count from 1, and a range goes upward"
            )
        ranges.append((first, last))
    return tuple(ranges)


def _range_text(first: int, last: int | None) -> str:
    if last is None:
        return f"{first}-"
    return str(first) if first == last else f"{first}-{last}"


def _max_pages(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_PAGES
    if isinstance(value, bool) or not isinstance(value, int):
        raise DocumentOptionsError("max_pages must be a whole number")
    if not 1 <= value <= MAX_PAGES_CEILING:
        raise DocumentOptionsError(f"max_pages must be between 1 and {MAX_PAGES_CEILING:,}")
    return value


def _dpi(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DocumentOptionsError("dpi must be a number")
    if not MIN_DPI <= value <= MAX_DPI:
        raise DocumentOptionsError(f"dpi must be between {MIN_DPI:g} and {MAX_DPI:g}")
    return float(value)
