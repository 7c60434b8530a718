"""process.rlimits: unknown types and impossible values are named before anything runs."""

import pytest

from pallet.errors import SpecError
from pallet.oci.linux import rlimits


def test_every_oci_rlimit_type_is_known():
    assert {
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "RLIMIT_CORE",
        "RLIMIT_RTTIME",
        "RLIMIT_MSGQUEUE",
    } <= set(rlimits.RLIMITS)
    assert len(rlimits.RLIMITS) == 16


def test_a_docker_like_list_is_valid():
    rlimits.validate(
        [
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1},
        ]
    )
    rlimits.validate(None)
    rlimits.validate([])


@pytest.mark.parametrize(
    "entries, expected",
    [
        (
            [{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}],
            "process.rlimits[0].type: unknown rlimit 'RLIMIT_FOO'",
        ),
        (
            [{"type": "NOFILE", "soft": 1, "hard": 1}],
            "process.rlimits[0].type: unknown rlimit 'NOFILE'",
        ),
        (
            [
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024},
            ],
            "process.rlimits[1]: RLIMIT_NOFILE soft limit 2048 is above its hard limit 1024",
        ),
        (
            [
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            ],
            "process.rlimits[1].type: RLIMIT_CORE is given more than once",
        ),
        (
            [{"type": "RLIMIT_CORE", "soft": -1, "hard": 0}],
            "process.rlimits[0].soft: must be an unsigned 64-bit integer, got -1",
        ),
        (
            [{"type": "RLIMIT_CORE", "soft": 0}],
            "process.rlimits[0].hard: must be an unsigned 64-bit integer, got None",
        ),
        ({"RLIMIT_CORE": 0}, "process.rlimits: must be a list"),
    ],
)
def test_bad_entries_are_named(entries, expected):
    with pytest.raises(SpecError) as e:
        rlimits.validate(entries)
    assert str(e.value) == expected
