"""`tarfile` with PEP 706 extraction filters (`extractall(filter="data")`) on every
Python pallet runs on.

The filters came in CPython 3.11.4; Debian 12's CPython is 3.11.2 and has none, so on
3.11 the `backports.tarfile` package (the 3.12 module, kept by the same maintainers'
circle) stands in. Use this module only where an archive is extracted with a filter;
layers are applied by pallet.image.unpack, which confines every entry itself.
"""

import sys

if sys.version_info >= (3, 12):
    import tarfile
else:  # pragma: no cover - depends on the interpreter
    from backports import tarfile

__all__ = ["tarfile"]
