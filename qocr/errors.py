"""The root of every error qocr raises on purpose.

Families live next to the code that raises them (``qocr.qwen.errors`` for the
provider, ``scheduler.sources`` for bad sources); all of them derive from
:class:`QocrError`, so a caller can catch everything qocr means with one clause.
"""


class QocrError(Exception):
    """Base class of qocr's own errors; ``code`` is a stable, machine-readable name."""

    code: str = "qocr_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(QocrError):
    """The settings are missing or invalid; raised before any work starts."""

    code = "config_error"


class NotFoundError(QocrError, LookupError):
    """No batch, item or submission with the id or key asked for (the CLI exits 1)."""

    code = "not_found"
