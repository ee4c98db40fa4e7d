"""qocr: bulk document digitization with Alibaba Cloud's Qwen-OCR models.

``from qocr import Client`` gives the Python API (docs/python-api.md). It is loaded on
first use: ``import qocr`` alone imports nothing else, so the command line starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qocr.version import __version__

if TYPE_CHECKING:
    from qocr.api import Client as Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from qocr.api import Client

        return Client
    raise AttributeError(f"module 'qocr' has no attribute {name!r}")
