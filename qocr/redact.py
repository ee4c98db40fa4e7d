"""Keep secrets out of anything a person or a log can read."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s,;\"']+")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def redact_url(url: str) -> str:
    """The URL with any password (and query string credentials) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret, any Bearer token and any ``sk-...`` key masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    return _KEY_LIKE.sub("sk-***", text)
