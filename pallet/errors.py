"""One error hierarchy for all of pallet, with user-facing messages.

Each error says what went wrong, with which value, and what to do. Exit codes
(and later gRPC codes) are mapped from the class here, in one place.
"""


class PalletError(Exception):
    """Base of every error pallet reports to a user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PalletError):
    """Bad input from the user: a flag, a config field, a name."""


class SpecError(InvalidArgument):
    """An OCI runtime config (config.json) that is not valid."""


class NotFound(PalletError):
    """A container, image, pod or file that does not exist."""


class AlreadyExists(PalletError):
    """A name or id that is taken."""


class FailedPrecondition(PalletError):
    """The object is in the wrong state for the operation."""


class SystemFailure(PalletError):
    """The kernel or a host tool refused something pallet needed."""
