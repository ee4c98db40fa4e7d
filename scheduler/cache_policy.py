"""A batch's result-cache policy: may it reuse paid results, how old, and for URL sources?

Chosen at submit (``--cache/--no-cache``, ``--cache-max-age``, ``--cache-urls``, the
schedule keys ``cache``, ``cache_max_age``, ``cache_urls``) and kept in the batch's
``source_options``, beside ``s3_mode``: how a batch is run, not what the model is asked, so
it never changes the request fingerprint a result is cached under. Workers read it back
with :meth:`CachePolicy.from_source_options`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qocr.errors import QocrError
from qocr.scheduler.slots import parse_duration

# A ``-latest`` alias moves to a new snapshot without notice: its answers are reused for
# at most this long unless the batch says otherwise (README, "Result cache").
LATEST_ALIAS_MAX_AGE_SECONDS = 30 * 86400
LATEST_SUFFIX = "-latest"


class CachePolicyError(QocrError):
    """A cache option that is not what it should be (a duration, a flag)."""

    code = "cache_option_invalid"


@dataclass(frozen=True)
class CachePolicy:
    """``enabled``: look results up before paying; ``max_age_seconds``: reuse only results
    at most this old (None: any age); ``urls``: key URL sources by URL (+ validators)."""

    enabled: bool = True
    max_age_seconds: int | None = None
    urls: bool = False

    @classmethod
    def for_model(
        cls,
        model: str,
        *,
        enabled: bool = True,
        max_age_seconds: int | None = None,
        urls: bool = False,
    ) -> CachePolicy:
        """The policy a batch of ``model`` gets: a ``-latest`` alias is bounded by default."""
        if max_age_seconds is None and model.endswith(LATEST_SUFFIX):
            max_age_seconds = LATEST_ALIAS_MAX_AGE_SECONDS
        return cls(enabled=enabled, max_age_seconds=max_age_seconds, urls=urls)

    def source_options(self) -> dict[str, Any]:
        """The keys this policy adds to a batch's ``source_options``."""
        return {
            "cache": self.enabled,
            "cache_max_age_seconds": self.max_age_seconds,
            "cache_urls": self.urls,
        }

    @classmethod
    def from_source_options(cls, data: dict[str, Any], model: str) -> CachePolicy:
        """The policy stored on a batch; a batch from before the cache gets the default."""
        if "cache" not in data:
            return cls.for_model(model)
        max_age = data.get("cache_max_age_seconds")
        return cls(
            enabled=bool(data["cache"]),
            max_age_seconds=None if max_age is None else int(max_age),
            urls=bool(data.get("cache_urls", False)),
        )


def policy_from_values(
    model: str, cache: Any = None, max_age: Any = None, urls: Any = None
) -> CachePolicy:
    """The policy for a submit's plain values (None: the default); checked for their kind.

    ``max_age``: a duration like ``"30d"``, ``"12h"``, ``"90m"``, ``"0s"``, or seconds as a
    number.
    """
    for name, value in (("cache", cache), ("cache_urls", urls)):
        if value is not None and not isinstance(value, bool):
            raise CachePolicyError(f"{name} must be true or false")
    return CachePolicy.for_model(
        model,
        enabled=True if cache is None else cache,
        max_age_seconds=None if max_age is None else max_age_seconds(max_age),
        urls=bool(urls),
    )


def max_age_seconds(value: Any) -> int:
    """A cache max age as whole seconds: a duration (``"30d"``) or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CachePolicyError("cache_max_age must be a duration like 30d, 12h or 90m")
    if isinstance(value, str):
        try:
            return int(parse_duration(value).total_seconds())
        except ValueError as exc:
            raise CachePolicyError(f"cache_max_age: {exc}") from None
    if not math.isfinite(value) or value < 0:
        raise CachePolicyError("cache_max_age must be a finite, non-negative number of seconds")
    return int(value)
