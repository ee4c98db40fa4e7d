"""Documents at the worker: a document item becomes its pages, a page item becomes an image.

:class:`ItemProcessor` asks :meth:`DocumentRunner.load` first, for every item it claims
(and batch mode's shard builder, :mod:`worker.batch_shard`, for every item of a shard):

- a **document** (a PDF or TIFF, by its bytes) is opened, its page count read and checked
  (``--pages``, ``--max-pages``), and its pages added to the batch as items of their own in
  one transaction (:meth:`models.document_pages.DocumentPages.expand`); no call is made
  for the document itself. A document that cannot be read fails as an item with a code:
  ``document_encrypted``, ``document_corrupt``, ``document_empty`` (no page, or none of
  ``--pages``), ``document_too_many_pages``, ``document_too_large``;
- a **page** (an item the expansion made) is drawn from its document and goes on like any
  image, rendered size and all (the token estimate before the call reads it): throttle,
  call, retries, one result;
- anything else is an image: ``load`` answers None and the processor reads it as before.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from qocr.models.document_pages import (
    PAGE_MARK,
    DocumentPages,
    Expansion,
    ExpansionResult,
    PageRef,
    document_source,
)
from qocr.models.records import ClaimedItem
from qocr.qwen.images import MAX_ENCODED_BYTES, PreparedImage, prepare_image
from qocr.qwen.options import RecognizeOptions
from qocr.scheduler.document_options import DocumentOptions
from qocr.worker import metrics
from qocr.worker.document_files import DocumentFiles, is_remote, named_as_document
from qocr.worker.fetch import FetchError
from qocr.worker.render import (
    SNIFF_BYTES,
    DocumentError,
    RenderLimits,
    open_document,
    sniff_document,
)

log = logging.getLogger(__name__)


# Adds a document's pages as items and ends the document (one transaction).
Expand = Callable[[ClaimedItem, Sequence[int]], ExpansionResult]


class PageImage(NamedTuple):
    """A page (or an image found behind a document's name) ready to send, and its sha256."""

    image: PreparedImage
    sha256: str


class DocumentRunner:
    """Expands documents and renders their pages; one per worker process."""

    def __init__(self, pages: DocumentPages, files: DocumentFiles) -> None:
        self.pages = pages
        self.files = files

    def load(
        self,
        item: ClaimedItem,
        request: RecognizeOptions,
        options: DocumentOptions,
        expand: Expand | None = None,
    ) -> PageImage | ExpansionResult | None:
        """The page ``item`` is, rendered for ``request``; the expansion of the document it
        is; or None for an image. Raises :class:`FetchError` (read it later, or never) or
        :class:`DocumentError` (it cannot be read as pages).

        ``expand`` adds a document's pages (default: :meth:`DocumentPages.expand`, for an
        item running under this worker's lease; batch mode gives its shard's)."""
        if PAGE_MARK in item.source:
            ref = self.pages.page_of(item.item_id)
            if ref is not None:
                return self._page(item, request, options, ref)
        if is_remote(item.source):
            if not named_as_document(item.source):
                return None
            path = self.files.path(item.source, item.fingerprint)
            with path.open("rb") as handle:
                if sniff_document(handle.read(SNIFF_BYTES)) is None:
                    return _image_file(path)  # an image behind a document's name
        elif self.files.local_kind(item.source) is None:
            return None
        else:
            path = Path(item.source)
        return self._expand(item, options, path, expand or self.pages.expand)

    def _expand(
        self, item: ClaimedItem, options: DocumentOptions, path: Path, expand: Expand
    ) -> ExpansionResult:
        with open_document(path) as document:
            count = document.page_count
        pages = options.selected(count)
        if not pages:
            raise DocumentError(
                f"none of pages {options.pages_text} exist: the document has {count}",
                code="document_empty",
            )
        if len(pages) > options.max_pages:
            raise DocumentError(
                f"{len(pages):,} pages to read, over the limit of {options.max_pages:,} "
                "(--max-pages)",
                code="document_too_many_pages",
            )
        result = expand(item, pages)
        if result.outcome is Expansion.EXPANDED:
            metrics.record_finished("expanded")
            log.info("item %s: document expanded into %d pages", item.item_id, result.pages_added)
        elif result.outcome is Expansion.CANCELLED:
            metrics.record_finished("cancelled", "cancelled")
        return result

    def _page(
        self, item: ClaimedItem, request: RecognizeOptions, options: DocumentOptions, ref: PageRef
    ) -> PageImage:
        path = self.files.path(document_source(item.source, ref.page), item.fingerprint)
        limits = RenderLimits.for_request(request, options.dpi)
        with open_document(path) as document:
            rendered = document.render(ref.page, limits)
        # Checked and measured like any image: the estimate before the call reads its size.
        return PageImage(prepare_image(rendered.data), hashlib.sha256(rendered.data).hexdigest())

    def close(self) -> None:
        self.files.close()


def _image_file(path: Path) -> PageImage:
    size = path.stat().st_size
    if size > MAX_ENCODED_BYTES:
        raise FetchError(
            f"the image is {size} bytes, over the 10 MB image limit", code="image_too_large"
        )
    data = path.read_bytes()
    return PageImage(prepare_image(data), hashlib.sha256(data).hexdigest())
