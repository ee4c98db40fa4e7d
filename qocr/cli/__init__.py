"""The ``qocr`` command line: one click group, each command family in its own module.

A command's module is imported only when that command runs (or its own ``--help`` is
asked for): ``qocr --help`` lists the commands from the table below, so it imports neither
SQLAlchemy nor Celery, boto3, aiohttp or httpx (tests/acceptance/test_status_cli_startup.py
starts real processes to keep it so).
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

import click

from qocr.errors import NotFoundError, QocrError


class Entry(NamedTuple):
    """Where a command lives ("module:attribute") and the first line of its help."""

    target: str
    summary: str


# The summaries repeat the first line of each command's docstring (a unit test keeps them
# equal), so that listing the commands needs none of their modules.
COMMANDS: dict[str, Entry] = {
    "beat": Entry(
        "qocr.cli.schedule:beat",
        "Send the schedule tick to the workers; run exactly one beat per deployment.",
    ),
    "cancel": Entry(
        "qocr.cli.manage:cancel",
        "Cancel BATCH: its queued items are cancelled now; running items finish.",
    ),
    "db": Entry(
        "qocr.cli.db:db", "Manage the database schema (Alembic migrations shipped with qocr)."
    ),
    "emulator": Entry(
        "qocr.cli.emulator:emulator",
        "Serve both Qwen-OCR APIs locally; point QOCR_BASE_URL at the printed URL.",
    ),
    "results": Entry(
        "qocr.cli.results:results",
        "Export the items of BATCH with their results (JSONL or CSV), streamed.",
    ),
    "retry": Entry(
        "qocr.cli.manage:retry", "Put the failed and cancelled items of BATCH back in the queue."
    ),
    "run": Entry(
        "qocr.cli.run:run",
        "Digitize SOURCES now, in this process, and store the results (no Redis needed).",
    ),
    "schedule": Entry(
        "qocr.cli.schedule:schedule",
        "Scheduled runs: list them, or run one now (config file: QOCR_CONFIG).",
    ),
    "show": Entry(
        "qocr.cli.manage:show", "Show item ITEM_ID: its state, its result and every attempt."
    ),
    "status": Entry(
        "qocr.cli.status:status",
        "List recent batches, or show BATCH: items by state, throughput, tokens, errors, cost.",
    ),
    "submit": Entry(
        "qocr.cli.submit:submit",
        "Create a batch of SOURCES (URLs, files, folders, s3://..., @manifest) for the workers.",
    ),
    "worker": Entry(
        "qocr.cli.worker:worker",
        "Process queued items from the broker until stopped (SIGTERM: finish, then exit).",
    ),
}


class QocrUsageError(click.ClickException):
    """One of qocr's own errors, shown as ``error: ...`` with exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


class LazyGroup(click.Group):
    """A group whose commands are imported only when they run.

    qocr's own errors (bad settings, bad sources) and a database that stops answering become
    one clear line on stderr and exit code 2, an unknown id or key exit code 1, however the
    group is invoked (console script or test runner).
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NotFoundError as exc:
            raise click.ClickException(exc.message) from None
        except QocrError as exc:
            raise QocrUsageError(exc.message) from None
        except Exception as exc:
            message = _database_failure(exc)
            if message is None:
                raise
            raise QocrUsageError(message) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute = entry.target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table: no command module is imported for it."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # A bare command of the same help text shortens it exactly as click would.
        rows = [
            (name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _database_failure(exc: Exception) -> str | None:
    """One line for a database that failed mid-command (SQLAlchemy loaded, so it is cheap)."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    from qocr.migrations.database import describe_failure
    from qocr.settings import get_settings

    return "the database failed: " + describe_failure(exc, get_settings().database_url)


@click.group(cls=LazyGroup)
@click.version_option(package_name="qocr")
def cli() -> None:
    """qocr: digitize documents in bulk with Qwen-OCR."""


def main() -> None:
    """Console entry point: qocr's own errors become one clear line and exit code 2."""
    try:
        exit_code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)
