"""Logging set-up: one format, and a filter that masks secrets in every record."""

from __future__ import annotations

import logging

from qocr.redact import redact_text


class RedactSecrets(logging.Filter):
    """Masks the given secrets, Bearer tokens and ``sk-`` keys in a record's final message."""

    def __init__(self, *secrets: str | None) -> None:
        super().__init__()
        self._secrets = tuple(secret for secret in secrets if secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message, *self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatted tracebacks repeat exception texts; render and clean them here.
            record.exc_text = redact_text(
                logging.Formatter().formatException(record.exc_info), *self._secrets
            )
            record.exc_info = None
        return True


def configure_logging(level: str = "INFO", *secrets: str | None) -> None:
    """Route every logger through one handler whose filter masks ``secrets``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(*secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request line at INFO; keep it for debugging only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
