"""Every `pallet` command answers --help (exit 0, its usage) and bad usage with 125."""

from __future__ import annotations

import pytest

from pallet.cli import COMMANDS, main

SUBCOMMANDS = [["system", "df"], ["system", "prune"], ["volume", "ls"], ["builder", "prune"],
               ["network", "connect"], ["network", "disconnect"], ["network", "ls"]]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS] + SUBCOMMANDS,
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


@pytest.mark.parametrize("argv, want", [
    # pflag: a shorthand takes `=VALUE`; in a group the letters before it are flags
    (["-d=false"], dict(detach=False)),
    (["-i=true", "-t=0"], dict(interactive=True, tty=False)),
    (["-it=false"], dict(interactive=True, tty=False)),
    (["-dit=F", "--rm=1"], dict(detach=True, interactive=True, tty=False, rm=True)),
    (["-ie=A=B"], dict(interactive=True, env=["A=B"])),
    (["-e=A=B", "-p8080:80"], dict(env=["A=B"], publish=["8080:80"])),
    (["-itp", "80:80"], dict(interactive=True, tty=True, publish=["80:80"])),
    (["--name", "d=x", "-d"], dict(name="d=x", detach=True)),
])
def test_run_short_bool_flags_take_values_like_pflag(argv, want):
    from pallet.cli import build_parser

    args = build_parser("run").parse_args(["run", *argv, "busybox", "ls", "-d=false"])
    assert {k: getattr(args, k) for k in want} == want
    assert args.image == "busybox" and args.command == ["ls", "-d=false"]


@pytest.mark.parametrize("argv, want", [
    (["ps", "--all=true", "-q=false", "--no-trunc=1"], dict(all=True, quiet=False,
                                                           no_trunc=True)),
    (["rm", "--force=false", "-v=true", "x"], dict(force=False, volumes=True)),
    (["rm", "x", "-f=true"], dict(force=True, containers=["x"])),
    (["logs", "--follow=false", "-t=true", "x"], dict(follow=False, timestamps=True)),
    (["start", "--attach=true", "-i=false", "x"], dict(attach=True, interactive=False)),
    (["exec", "--detach=false", "-it=false", "x", "ls", "-t=1"],
     dict(detach=False, interactive=True, tty=False, command=["ls", "-t=1"])),
    (["stats", "--no-stream=true", "--all=false"], dict(no_stream=True, all=False)),
    (["cp", "--follow-link=true", "a", "b"], dict(follow_link=True)),
    (["attach", "--no-stdin=true", "x"], dict(no_stdin=True)),
    (["system", "prune", "--force=true", "-a=false"], dict(force=True, all=False)),
    (["volume", "rm", "-f=1", "v"], dict(force=True)),
    (["network", "create", "--internal=true", "n"], dict(internal=True)),
    (["images", "--quiet=true"], dict(quiet=True)),
    (["rmi", "--force=false", "i"], dict(force=False)),
    (["history", "-q=true", "--no-trunc=1", "i"], dict(quiet=True, no_trunc=True)),
    (["container", "prune", "-f=true"], dict(force=True)),
    (["compose", "up", "-d=false", "--build=true", "web"], dict(detach=False, build=True,
                                                                services=["web"])),
    (["compose", "ps", "-aq=false"], dict(all=True, quiet=False)),
    (["compose", "ps", "--services"], dict(list_services=True, services=[])),
    (["compose", "rm", "-fs=true", "-v=0"], dict(force=True, stop=True, volumes=False)),
    (["compose", "logs", "-f=false", "--no-log-prefix=true"], dict(follow=False,
                                                                   no_log_prefix=True)),
    (["compose", "down", "-v=false"], dict(volumes=False)),
    (["compose", "build", "--no-cache=true", "-q=false"], dict(no_cache=True, quiet=False)),
    (["compose", "config", "-q=true"], dict(quiet=True)),
    # exec and run: flags end at the service; the command keeps its own.
    (["compose", "exec", "-T=true", "-d=false", "web", "ls", "-d=x"],
     dict(no_TTY=True, detach=False, service="web", command=["ls", "-d=x"])),
    (["compose", "run", "-d=false", "--rm=true", "-T", "web", "ls", "-d=x"],
     dict(detach=False, rm=True, no_TTY=True, service="web", command=["ls", "-d=x"])),
])
def test_other_commands_bool_flags_take_values_like_docker(argv, want):
    from pallet.cli import COMMANDS, build_parser

    args = build_parser(argv[0] if argv[0] in COMMANDS else None).parse_args(argv)
    assert {k: getattr(args, k) for k in want} == want


def test_every_bool_flag_of_every_command_is_a_go_bool():
    """No argparse store_true left: each takes `=false` as docker's flags do (commit's
    --no-pause is the negation of -p/--pause, a Go bool, and stays a plain switch)."""
    import argparse

    from pallet.cli import build_parser

    def walk(p: argparse.ArgumentParser, path: str):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{path} {name}")
            elif isinstance(a, argparse._StoreTrueAction) or (
                    isinstance(a, argparse._StoreFalseAction) and a.dest != "pause"):
                yield f"{path} {a.option_strings[-1]}"

    assert list(walk(build_parser(), "pallet")) == []


def test_a_bad_short_bool_value_is_125_in_pflag_words(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "-d=maybe", "busybox"])
    assert exit_.value.code == 125
    assert capsys.readouterr().err.startswith(
        'pallet: invalid argument "maybe" for "-d, --detach" flag: strconv.ParseBool')


def test_help_lists_each_bool_flag_once(capsys):
    with pytest.raises(SystemExit):
        main(["--root", "/nonexistent-heng", "ps", "--help"])
    out = capsys.readouterr().out
    assert "  -a, --all " in out and "--all=" not in out
