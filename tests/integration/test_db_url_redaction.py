"""`qocr db upgrade` prints the database URL without its password, whether the password is
in the userinfo or a ``?password=`` query parameter (issue 13, point 8). Real PostgreSQL
(trust auth: the password is sent and ignored)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from qocr.cli import cli
from qocr.settings import get_settings

PASSWORD = "hunter2-db-secret"


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("form", ["query", "userinfo"])
def test_db_upgrade_prints_the_url_without_the_password(
    configured: pytest.MonkeyPatch, fresh_pg_database: str, form: str
) -> None:
    if form == "query":
        url = f"{fresh_pg_database}?password={PASSWORD}&application_name=qocr-test"
    else:
        with_password = make_url(fresh_pg_database).set(password=PASSWORD)
        url = with_password.render_as_string(hide_password=False)
    configured.setenv("QOCR_DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "at revision" in result.output
    assert PASSWORD not in result.output
    assert "***" in result.output
    if form == "query":
        assert "application_name=qocr-test" in result.output  # the rest stays readable
