"""The ``qocr`` command line: one click group, each command family in its own module.

Commands are imported lazily so that ``qocr --help`` and light commands do not pay for
Celery, boto3 or aiohttp.
"""

from __future__ import annotations

import importlib
import sys

import click

from qocr.errors import QocrError

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "beat": "qocr.cli.schedule:beat",
    "cancel": "qocr.cli.manage:cancel",
    "db": "qocr.cli.db:db",
    "emulator": "qocr.cli.emulator:emulator",
    "results": "qocr.cli.results:results",
    "retry": "qocr.cli.manage:retry",
    "run": "qocr.cli.run:run",
    "schedule": "qocr.cli.schedule:schedule",
    "show": "qocr.cli.manage:show",
    "status": "qocr.cli.status:status",
    "submit": "qocr.cli.submit:submit",
    "worker": "qocr.cli.worker:worker",
}


class QocrUsageError(click.ClickException):
    """One of qocr's own errors, shown as ``error: ...`` with exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


class LazyGroup(click.Group):
    """A group whose commands are imported only when they run or are listed.

    qocr's own errors (bad settings, bad sources, bad ids) become one clear line on stderr
    and exit code 2, however the group is invoked (console script or test runner).
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except QocrError as exc:
            raise QocrUsageError(exc.message) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


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
