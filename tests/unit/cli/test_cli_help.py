"""Every `pallet` command answers --help (exit 0, its usage) and bad usage with 125."""

from __future__ import annotations

import pytest

from pallet.cli import COMMANDS, main

SUBCOMMANDS = [["system", "df"], ["system", "prune"], ["volume", "ls"],
               ["network", "connect"], ["network", "disconnect"], ["network", "ls"]]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS if c != "container-ls"] + SUBCOMMANDS,
                         ids=" ".join)
def test_help_of_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--root", "/nonexistent-heng", *argv, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: pallet {' '.join(argv)}")


def test_unknown_flag_is_125_and_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ps", "--no-such-flag"])
    assert exit_.value.code == 125
    assert capsys.readouterr().err == ("pallet: unknown flag: --no-such-flag\n"
                                       "See 'pallet ps --help'.\n")
