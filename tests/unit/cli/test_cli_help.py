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


def test_run_bool_flags_take_go_values_like_docker():
    # `docker run --rm=false --privileged=true -it IMAGE` is what scripts write.
    from pallet.cli import build_parser

    args = build_parser("run").parse_args(
        ["run", "--rm=false", "--privileged=true", "--read-only=1", "--init=false",
         "--interactive=true", "-t", "-d", "busybox", "sh", "--rm=true"])
    assert (args.rm, args.privileged, args.read_only, args.init) == (False, True, True, False)
    assert (args.interactive, args.tty, args.detach) == (True, True, True)
    assert args.image == "busybox" and args.command == ["sh", "--rm=true"]
    args = build_parser("run").parse_args(["run", "-it", "--rm", "busybox"])
    assert (args.interactive, args.tty, args.rm, args.detach) == (True, True, True, False)


def test_a_bad_bool_value_is_125(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--rm=maybe", "busybox"])
    assert exit_.value.code == 125
    assert '"maybe" for "--rm"' in capsys.readouterr().err
