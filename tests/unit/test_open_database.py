"""The pure parts of opening the database: the known head revision, and error lines."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from qocr.errors import ConfigError
from qocr.migrations import migrate
from qocr.migrations.database import describe_failure, head_revision, open_database
from qocr.settings import load_settings


def test_the_head_read_from_the_files_is_alembics() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))

    assert head_revision() == scripts.get_current_head()


def test_a_failure_is_the_driver_first_line_without_the_password() -> None:
    driver = Exception("connection failed: password pw-s3cret rejected\n\tmore detail")
    error = OperationalError("SELECT secret_parameter", {"p": "x"}, driver)
    url = "postgresql://qocr:pw-s3cret@db.example:5432/qocr"

    line = describe_failure(error, url)

    assert line.startswith("postgresql://qocr:***@db.example:5432/qocr: ")
    assert line.endswith(": connection failed: password *** rejected")


def test_a_url_sqlalchemy_cannot_parse_is_a_config_error_without_its_password() -> None:
    settings = load_settings(database_url="postgresql://qocr:pw-s3cret@db.example:notaport/qocr")

    with pytest.raises(ConfigError) as caught:
        open_database(settings)

    assert "pw-s3cret" not in caught.value.message
    assert caught.value.message.startswith("QOCR_DATABASE_URL is not a database URL")
