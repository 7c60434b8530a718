"""docker's --filter words as pallet.cli.filters reads them: keys, booleans, labels,
times and reference globs, with the daemon's error words."""

from __future__ import annotations

import pytest

from pallet.cli.filters import Filters, parse_timestamp, path_match
from pallet.errors import InvalidArgument


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("busy*", "busybox:latest", True),
    ("*", "busybox", True),
    ("*", "library/busybox", False),          # `*` never crosses a `/`
    ("*/*", "library/busybox", True),
    ("b?sybox", "busybox", True),
    ("[ab]usybox", "busybox", True),
    ("[^b]usybox", "busybox", False),
    ("busybox", "busybox:latest", False),     # the caller also tries the name alone
    ("a\\*", "a*", True),
])
def test_reference_patterns_are_go_path_globs(pattern, name, matches):
    assert path_match(pattern, name) is matches


@pytest.mark.parametrize("pattern", ["[x", "x\\", "[]"])
def test_a_bad_pattern_is_gos_syntax_error(pattern):
    with pytest.raises(InvalidArgument, match="^syntax error in pattern$"):
        path_match(pattern, "x")


def test_keys_are_checked_lowercased_and_values_trimmed():
    flt = Filters(["Label= a=b ", "label=c"], ("label",))
    assert flt.get("label") == ["a=b", "c"]
    with pytest.raises(InvalidArgument, match="^invalid filter 'color'$"):
        Filters(["color=red"], ("label",))


def test_booleans_as_moby_reads_them():
    assert Filters([], ("dangling",)).bool("dangling") is None
    assert Filters(["dangling=1"], ("dangling",)).bool("dangling") is True
    assert Filters(["dangling=false"], ("dangling",)).bool("dangling") is False
    for words, shown in ((["dangling=maybe"], "maybe"),
                         (["dangling=true", "dangling=0"], "true 0")):
        with pytest.raises(InvalidArgument, match=rf"^invalid filter 'dangling=\[{shown}\]'$"):
            Filters(words, ("dangling",)).bool("dangling")


def test_labels_each_must_hold_and_label_not_drops_what_has_them_all():
    flt = Filters(["label=a", "label=b=2"], ("label", "label!"))
    assert flt.labels_match({"a": "", "b": "2"})
    assert not flt.labels_match({"a": "", "b": "3"})
    flt = Filters(["label!=a", "label!=b"], ("label", "label!"))
    assert flt.labels_match({"a": "1"}) and not flt.labels_match({"a": "1", "b": "1"})


def test_until_takes_times_and_durations_once():
    assert parse_timestamp("2024-01-01T00:00:00Z") == 1704067200 * 10**9
    assert parse_timestamp("1h", now=7200.0) == 3600 * 10**9
    assert parse_timestamp("1704067200") == 1704067200 * 10**9
    with pytest.raises(InvalidArgument, match='^failed to parse value as time or duration: "x"$'):
        parse_timestamp("x")
    with pytest.raises(InvalidArgument, match="^more than one until filter specified$"):
        Filters(["until=1h", "until=2h"], ("until",)).until()


def test_names_match_exactly_or_as_a_regular_expression():
    flt = Filters(["name=^fl-", "name=c.d"], ("name",))
    assert flt.matches("name", "fl-x") and flt.matches("name", "abcxd")
    assert not flt.matches("name", "other")
    assert Filters([], ("name",)).matches("name", "anything")
