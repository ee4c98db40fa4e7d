"""Settings: validated once, with clear messages, and never showing the API key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qocr.errors import ConfigError
from qocr.logs import RedactSecrets
from qocr.settings import DEFAULT_DATABASE_URL, load_settings

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in ("DASHSCOPE_API_KEY", "QOCR_DATABASE_URL", "QOCR_REGION", "QOCR_API", "QOCR_RPM"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.region == "intl"
    assert settings.api == "compatible"
    assert settings.model == "qwen-vl-ocr-latest"
    assert settings.api_key is None


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DASHSCOPE_API_KEY={KEY}\nQOCR_REGION=cn\nQOCR_RPM=600\n")
    monkeypatch.setenv("QOCR_API", "dashscope")
    settings = load_settings()
    assert settings.require_api_key() == KEY
    assert (settings.region, settings.api, settings.rpm) == ("cn", "dashscope", 600)


def test_invalid_values_are_named_without_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QOCR_REGION", "mars")
    monkeypatch.setenv("QOCR_RPM", "-5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "QOCR_REGION" in info.value.message
    assert "QOCR_RPM" in info.value.message
    assert "mars" not in info.value.message


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY is not set"):
        load_settings().require_api_key()


def test_key_never_in_repr_str_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("QOCR_DATABASE_URL", "postgresql://qocr:dbpass99@db/qocr")
    settings = load_settings()
    for rendering in (repr(settings), str(settings)):
        assert KEY not in rendering
        assert "dbpass99" not in rendering
    assert KEY not in str(settings.model_dump())
    assert settings.require_api_key() == KEY


def test_log_filter_masks_key_and_bearer(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("qocr.test")
    caplog.handler.addFilter(RedactSecrets(KEY))
    with caplog.at_level(logging.INFO):
        logger.info("calling with key %s", KEY)
        logger.info("header Authorization: Bearer abc.def-123")
        try:
            raise RuntimeError(f"boom {KEY}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text
    assert KEY not in text
    assert "abc.def-123" not in text
    assert "Bearer ***" in text
    assert "boom " in text and "0123456789abcdef" not in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QOCR_REQUEST_TIMEOUT", "inf"),
        ("QOCR_REQUEST_TIMEOUT", "nan"),
        ("QOCR_CALL_DEADLINE_SECONDS", "inf"),
        ("QOCR_CALL_DEADLINE_SECONDS", "0"),
        ("QOCR_GRANTED_MAX_TOKENS", "8193"),
    ],
)
def test_call_limits_must_be_finite(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_call_deadline_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().call_deadline_seconds == 120.0
    monkeypatch.setenv("QOCR_CALL_DEADLINE_SECONDS", "45")
    monkeypatch.setenv("QOCR_GRANTED_MAX_TOKENS", "8192")
    settings = load_settings()
    assert (settings.call_deadline_seconds, settings.granted_max_tokens) == (45.0, 8192)
