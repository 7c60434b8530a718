"""Debug messages of the OCI runtime without importing logging (~10 ms of pallet-runc start-up).

A message goes to the logging module when something in the process already imported it (an
embedding program such as pallet's engine, which may have configured it), else to `sink` when
debugging is on (PALLET_DEBUG set in the environment, or `pallet-runc --debug`), else nowhere.
It never imports anything, so it also works in a container's init after pivot_root, where the
Python library is out of reach.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


enabled = bool(os.environ.get("PALLET_DEBUG"))
sink: Callable[[str], None] = _stderr


def debug(name: str, message: str, *args: object) -> None:
    """logging.getLogger(name).debug(message, *args), when anyone is listening."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(name).debug(message, *args)
    elif enabled:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = f"{message} {args!r}"
        sink(f"{name}: {text}")


class Logger:
    """The part of logging.Logger this package uses: `log.debug("...%s", value)`."""

    def __init__(self, name: str):
        self.name = name

    def debug(self, message: str, *args: object) -> None:
        debug(self.name, message, *args)
