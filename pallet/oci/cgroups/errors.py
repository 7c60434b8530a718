"""The errors of the cgroups library, placed in pallet's one error hierarchy.

A cgroup the kernel refuses is a SystemFailure; a limit this host cannot take is also
an InvalidArgument, so the user learns to change the value rather than the host.
"""

from pallet.errors import InvalidArgument, SystemFailure


class CgroupError(SystemFailure):
    """A cgroup operation the kernel refused, or a configuration it cannot express."""


class InvalidCgroupValue(CgroupError, InvalidArgument):
    """A resource value the kernel rejected (out of range, below usage, malformed)."""
