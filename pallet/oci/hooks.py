"""OCI lifecycle hooks: run each with the container state on stdin, with timeouts.

Failures of prestart/createRuntime/createContainer/startContainer hooks abort the
container; poststart and poststop failures are only warnings (runtime spec).
"""

from __future__ import annotations

import sys

from pallet.errors import PalletError
from pallet.oci import jsonlite

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

FATAL = ("prestart", "createRuntime", "createContainer", "startContainer")


class HookError(PalletError):
    pass


def run_hooks(spec: dict[str, Any], phase: str, state: dict[str, Any]) -> None:
    hooks = (spec.get("hooks") or {}).get(phase) or []
    payload = jsonlite.dumps(state).encode()
    for i, hook in enumerate(hooks):
        try:
            _run_one(hook, payload)
        except HookError as e:
            msg = f"{phase} hook #{i} ({hook['path']}): {e}"
            if phase in FATAL:
                raise HookError(msg) from None
            print(f"warning: {msg}", file=sys.stderr)


def _run_one(hook: dict[str, Any], payload: bytes) -> None:
    # Imported here, not at the top: subprocess costs ~12 ms, and start and delete always
    # call run_hooks, mostly with no hooks to run. (A startContainer hook runs in the
    # container's init after pivot_root; init.preload imports subprocess for it.)
    import subprocess

    args = hook.get("args") or [hook["path"]]
    timeout = hook.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise HookError(f"timeout must be a positive integer, got {timeout!r}")
    try:
        proc = subprocess.run(args, executable=hook["path"], input=payload,
                              env=_env(hook.get("env")), capture_output=True,
                              timeout=timeout, close_fds=True)
    except subprocess.TimeoutExpired:
        raise HookError(f"timed out after {timeout}s") from None
    except OSError as e:
        raise HookError(e.strerror or str(e)) from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise HookError(f"exit status {proc.returncode}" + (f": {err[-1]}" if err else ""))


def _env(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out
