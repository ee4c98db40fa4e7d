"""Acceptance fixtures: a fresh PostgreSQL database, our Redis database and an emulator per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from qocr.emulator.testing import running_emulator
from qocr.migrations import migrate
from qocr.models.db import make_engine
from tests.support.pipeline import Deployment, MakeDeployment


@pytest.fixture
def deploy(fresh_pg_database: str, redis_url: str, tmp_path: Path) -> Iterator[MakeDeployment]:
    """``deploy(**emulator_options)`` starts an emulator and returns the deployment around it."""
    engine = make_engine(fresh_pg_database)
    migrate.upgrade(engine)
    engine.dispose()
    stack = ExitStack()
    deployments: list[Deployment] = []

    def make(**emulator_options: Any) -> Deployment:
        emulator_options.setdefault("recognizer", "hash")
        emulator = stack.enter_context(running_emulator(**emulator_options))
        deployment = Deployment(
            tmp=tmp_path, database_url=fresh_pg_database, broker_url=redis_url, emulator=emulator
        )
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        deployment.close()
    stack.close()
