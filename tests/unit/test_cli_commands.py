"""The command table that lets `qocr --help` list commands without importing them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from qocr.cli import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_summary_is_the_first_line_of_the_command_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)

    assert command is not None
    assert (command.help or "").splitlines()[0] == COMMANDS[name].summary


def test_help_lists_every_command_as_a_plain_click_group_would() -> None:
    context = click.Context(cli)
    plain = click.Group("qocr")
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        plain.add_command(command, name)

    def commands_section(group: click.Group) -> str:
        return CliRunner().invoke(group, ["--help"]).output.split("Commands:", 1)[1]

    listed = commands_section(cli)
    assert listed == commands_section(plain)
    assert [line.split()[0] for line in listed.strip().splitlines()] == sorted(COMMANDS)


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["stauts"])

    assert result.exit_code == 2 and "No such command 'stauts'" in result.output
