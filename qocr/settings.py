"""Every setting qocr reads, in one validated object.

Configuration enters here once (environment variables, then a ``.env`` file in the working
directory) and is passed down; no other module reads ``os.environ``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qocr.errors import ConfigError
from qocr.qwen.catalog import MAX_OUTPUT_TOKENS
from qocr.redact import redact_url

Region = Literal["intl", "us", "cn"]
Api = Literal["compatible", "dashscope"]
S3Mode = Literal["inline", "presign"]

DEFAULT_DATABASE_URL = "sqlite:///qocr.db"


class Settings(BaseSettings):
    """qocr's configuration: field ``x`` comes from ``QOCR_X``, the key from DASHSCOPE_API_KEY."""

    model_config = SettingsConfigDict(
        env_prefix="QOCR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # SecretStr keeps the key out of repr(), str() and model_dump(); it is unwrapped only
    # where a request header is built.
    api_key: SecretStr | None = Field(default=None, alias="DASHSCOPE_API_KEY")
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = "redis://localhost:6379/0"
    # Throttle, dispatch window and leases live here; defaults to the broker's Redis.
    redis_url: str | None = None
    region: Region = "intl"
    base_url: str | None = None
    api: Api = "compatible"
    model: str = "qwen-vl-ocr-latest"
    # None: the model's documented limit (see qocr.qwen.catalog).
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    s3_endpoint_url: str | None = None
    s3_mode: S3Mode = "inline"
    config: str = "qocr.toml"
    # Seconds a claimed item stays leased to its worker; a killed worker's items return after it.
    lease_seconds: int = Field(default=45, ge=5)
    # Where a worker keeps paid results it could not save yet (the database was away), until
    # they are saved; None: $XDG_STATE_HOME/qocr/results (~/.local/state/qocr/results).
    spool_dir: str | None = None
    max_attempts: int = Field(default=8, ge=1)
    # Seconds: the read timeout of a call (a stream: the longest silence between chunks).
    request_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    # Seconds: the total deadline of one call, plain or streamed, however its answer trickles.
    call_deadline_seconds: float = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)
    # The max_tokens ceiling Alibaba granted this account on request (documented: 4,096 for
    # qwen-vl-ocr and its dated snapshots, 8,192 at most); None: the documented ceilings.
    granted_max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    log_level: str = "INFO"
    # Batch API mode (``--mode batch``, scheduler/batch_mode.py): the provider's per-file
    # limits (50,000 lines, 500 MB, 6 MB a line), lowered in tests; seconds between polls of
    # one provider batch; how long a presigned S3 URL in a shard lives (beyond the 24 h
    # completion window; SigV4 allows 7 days at most).
    batch_max_lines: int = Field(default=50_000, ge=1, le=50_000)
    batch_max_bytes: int = Field(default=500 * 1024 * 1024, ge=1024, le=500 * 1024 * 1024)
    batch_max_line_bytes: int = Field(default=6 * 1024 * 1024, ge=1024, le=6 * 1024 * 1024)
    batch_poll_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    batch_presign_seconds: int = Field(default=3 * 86_400, gt=86_400, le=7 * 86_400)
    # Signs completion webhooks (HMAC-SHA256); a worker without it sends none (see
    # docs/webhooks.md). SecretStr: never in repr(), logs or the database.
    webhook_secret: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    def __repr_args__(self) -> list[tuple[str | None, object]]:
        # URLs may carry passwords (postgresql://user:pw@..., redis://:pw@...).
        return [
            (name, redact_url(value) if isinstance(value, str) and "://" in value else value)
            for name, value in super().__repr_args__()
        ]

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or self.broker_url

    @property
    def effective_spool_dir(self) -> Path:
        if self.spool_dir:
            return Path(self.spool_dir).expanduser()
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "qocr" / "results"

    def require_api_key(self) -> str:
        """The API key's value, for building a request header; a clear error when unset."""
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ConfigError("DASHSCOPE_API_KEY is not set (environment or .env file)")
        return self.api_key.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; a :class:`ConfigError` names every bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            is_key = name == "DASHSCOPE_API_KEY"
            variable = name if is_key else f"QOCR_{name.upper()}"
            # The input value is left out on purpose: it may be a secret.
            problems.append(f"{variable}: {error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
