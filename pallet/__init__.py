"""pallet: the container stack of a Kubernetes node, in Python.

Layers (an arrow only points down): faces (cli, cri) -> engine -> image, oci.
"""

__version__ = "0.1.0"


def exit_now(code: int) -> None:
    """Leave the process with CODE at once, as the launchers in bin/ do: flush stdio and
    skip the interpreter's teardown (freeing every object: ~7 ms in pallet-runc, which
    containerd and podman start once or more per container)."""
    import os
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    os._exit(code)
