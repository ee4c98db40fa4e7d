"""docker-compose.yml, Dockerfile and .dockerignore: the deployment our users run.

`docker compose config` renders the file where the Docker CLI has the compose plugin (no
engine is needed for that). The file is also read as YAML (PyYAML) and checked for the
services, profiles, health checks, start order, broker durability, and for secrets: none
may be written in the file, each must come from the environment and be required there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
QOCR_SERVICES = {"migrate", "worker", "beat", "flower"}
LONG_RUNNING = {"redis", "postgres", "minio", "worker", "beat", "flower", "emulator", "metrics"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|AUTH|ACCESS_KEY")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
DUMMY_ENV = {
    "DASHSCOPE_API_KEY": "sk-compose-test-000000",
    "POSTGRES_PASSWORD": "compose-test-password",
    "AWS_ACCESS_KEY_ID": "compose-test-user",
    "AWS_SECRET_ACCESS_KEY": "compose-test-secret",
    "FLOWER_BASIC_AUTH": "admin:compose-test",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def documented_variables() -> set[str]:
    """The environment qocr reads: QOCR_<field> for each setting, the key, boto3's AWS_*."""
    from qocr.settings import Settings

    names = {
        "DASHSCOPE_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }
    for name, field in Settings.model_fields.items():
        if field.alias is None:
            names.add(f"QOCR_{name.upper()}")
    return names


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert set(found) == {
        "redis",
        "postgres",
        "minio",
        "createbucket",
        "migrate",
        "worker",
        "beat",
        "flower",
        "emulator",
        "metrics",
    }
    assert found["emulator"]["profiles"] == ["emulator"]
    assert found["metrics"]["profiles"] == ["metrics"]
    assert [name for name, spec in found.items() if "profiles" in spec] == ["emulator", "metrics"]
    # Every worker serves /metrics in the network; Prometheus finds them by DNS.
    assert found["worker"]["command"][-2:] == ["--metrics-port", "9100"]
    assert found["emulator"]["command"][:2] == ["qocr", "emulator"]
    assert "--host" in found["emulator"]["command"]
    assert found["emulator"]["command"][found["emulator"]["command"].index("--host") + 1] == (
        "0.0.0.0"
    )
    assert found["migrate"]["command"] == ["qocr", "db", "upgrade"]
    assert found["worker"]["command"][:2] == ["qocr", "worker"]
    assert found["beat"]["command"] == ["qocr", "beat"]
    assert "flower" in found["flower"]["command"]
    assert "mc mb --ignore-existing" in " ".join(found["createbucket"]["command"])


def test_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    found = services(compose)
    for name in LONG_RUNNING:
        check = found[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("migrate", "createbucket"):  # one-shots
        assert found[name]["restart"] == "no"
        assert "healthcheck" not in found[name]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in found[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("createbucket") == {"minio": "service_healthy"}
    assert conditions("worker") == {
        "migrate": "service_completed_successfully",
        "createbucket": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert conditions("beat") == {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert conditions("flower") == {"redis": "service_healthy"}


def test_broker_durability_and_scaling(compose: dict[str, Any]) -> None:
    found = services(compose)
    command = found["redis"]["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs == {
        "--appendonly": "yes",
        "--appendfsync": "everysec",
        "--maxmemory-policy": "noeviction",
    }
    assert any(volume.endswith(":/data") for volume in found["redis"]["volumes"])
    # Workers scale (`--scale worker=4`): no fixed name, no host port to collide on.
    assert "container_name" not in found["worker"] and "ports" not in found["worker"]
    assert found["beat"]["deploy"]["replicas"] == 1
    assert not any("container_name" in spec for spec in found.values())


def test_qocr_processes_are_configured_only_by_documented_variables(
    compose: dict[str, Any],
) -> None:
    found = services(compose)
    documented = documented_variables()
    for name in QOCR_SERVICES:
        environment = found[name]["environment"]
        extra = set(environment) - documented - {"FLOWER_BASIC_AUTH"}
        assert not extra, f"{name} sets undocumented variables {sorted(extra)}"
        assert environment["QOCR_CONFIG"] == "/etc/qocr/qocr.toml"
        assert environment["QOCR_BROKER_URL"] == "redis://redis:6379/0"
        assert environment["QOCR_DATABASE_URL"].startswith("postgresql://qocr:${POSTGRES_PASSWORD")
        mount, *others = found[name]["volumes"]
        assert mount == {
            "type": "bind",
            "source": "./qocr.toml",
            "target": "/etc/qocr/qocr.toml",
            "read_only": True,
        }
        # Only the worker keeps state: the paid results it could not save yet.
        assert others == (["kept-results:/var/lib/qocr/results"] if name == "worker" else [])
        if name == "worker":
            assert environment["QOCR_SPOOL_DIR"] == "/var/lib/qocr/results"
        # An empty QOCR_BASE_URL is invalid: it is passed through only when set.
        assert environment["QOCR_BASE_URL"] is None


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"\bsk-[A-Za-z0-9]{6,}", text)
    for name, spec in services(compose).items():
        environment = spec.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: environment must be a mapping"
        for variable, value in environment.items():
            if value is None or not SECRET_NAME.search(variable):
                continue
            references = list(INTERPOLATION.finditer(str(value)))
            assert references, f"{name}: {variable} is written in the file"
    # Every secret the file refers to is required from the environment, never defaulted.
    for match in INTERPOLATION.finditer(text):
        if SECRET_NAME.search(match["name"]):
            assert match["op"] in (None, ":?", "?"), f"{match['name']} has a default value"
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", text)


def test_the_image_and_its_build_context() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert stages and all(stage == "python:3.11-slim" for stage in stages)
    assert re.search(r'pip install "\$\{wheel\}\[local\]" "flower', dockerfile)
    assert re.search(r"^USER\s+qocr$", dockerfile, flags=re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".env", "qocr.toml", ".venv/", ".git/", "*.db"):
        assert pattern in ignored


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_renders(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        # CI installs one (.ci/run): there the file must be checked, not skipped.
        assert not os.environ.get("QOCR_REQUIRE_COMPOSE"), "no Compose CLI to check the file"
        pytest.skip("no `docker compose` plugin or docker-compose on this machine")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / "qocr.example.toml", tmp_path / "qocr.toml")
    base = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}
    rendered = subprocess.run(
        [*command, "--profile", "emulator", "config"],
        cwd=tmp_path,
        env={**base, **DUMMY_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    document = yaml.safe_load(rendered.stdout)
    assert set(document["services"]) >= LONG_RUNNING | {"migrate", "createbucket"}
    worker_env = document["services"]["worker"]["environment"]
    assert worker_env["QOCR_DATABASE_URL"] == (
        "postgresql://qocr:compose-test-password@postgres:5432/qocr"
    )
    assert worker_env.get("QOCR_BASE_URL") is None  # unset on the host: not passed at all
    assert "warn" not in rendered.stderr.lower(), rendered.stderr
    missing = subprocess.run(
        [*command, "config"],
        cwd=tmp_path,
        env={**base, **{k: v for k, v in DUMMY_ENV.items() if k != "POSTGRES_PASSWORD"}},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "set POSTGRES_PASSWORD" in missing.stderr
