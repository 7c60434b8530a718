"""pallet.oci: the OCI runtime as a library (and, via pallet.oci.cli, as `pallet-runc`).

    from pallet.oci import Runtime
    Runtime("/run/pallet-runc").create("id", "/path/to/bundle")
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms
if TYPE_CHECKING:
    from pallet.oci.create import Runtime

__all__ = ["Runtime"]


def __getattr__(name: str):  # noqa: ANN202 - keep `import pallet.oci` free of side imports
    if name == "Runtime":
        from pallet.oci.create import Runtime

        return Runtime
    raise AttributeError(name)
