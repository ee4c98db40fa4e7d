"""Keep secrets out of anything a person or a log can read."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s,;\"']+")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")
# scheme://user:password@host: greedy up to the last "@" before a "/", since a password may
# hold an "@" of its own.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^\s/]+@")
# A query parameter that carries a credential: presigned S3 URLs (X-Amz-Signature,
# X-Amz-Credential, X-Amz-Security-Token; SigV2's Signature, AWSAccessKeyId, Expires), SAS
# tokens (sig), and any *signature*, *token*, *key*, *password*, *secret*, *auth* name.
# "tokens" is spared: max_tokens=9000 in a provider's message is no secret.
_CREDENTIAL_NAME = (
    r"[\w.\-]*(?:signature|credential|token(?!s)|key|passw(?:or)?d|secret|auth)[\w.\-]*"
    r"|sig|pwd|expires"
)
# The URL may arrive escaped: percent-encoded inside another URL, JSON (\u0026) or HTML.
_SEPARATOR = r"(?:(?<![\w.\-%])|(?<=%26)|(?<=%3[Ff])|(?<=\\u0026))"
_END = r"%26|\\u0026|&amp;"
_SECRET_PARAM = re.compile(
    rf"(?i){_SEPARATOR}((?:{_CREDENTIAL_NAME})(?:=|%3[Dd]))(?:(?!{_END})[^&\s\"'<>\\#,;)])+"
)


def redact_url(url: str) -> str:
    """The URL with any password and query-string credential replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all: mask what looks like one
        return redact_text(url)
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return _SECRET_PARAM.sub(r"\1***", url)


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret, any Bearer token, any ``sk-...`` key, any URL
    password and any credential query parameter (presigned URLs) masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _KEY_LIKE.sub("sk-***", text)
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)
