"""Which errors are the command's fault: those raised while checking the command as given become usage errors
(exit status 2), the rest stay runtime errors (1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from zofo.errors import UsageError, ZofoError


@contextmanager
def usage_errors() -> Iterator[None]:
    """Errors in the command as given (flags, config values, the run folder) are usage errors: exit status 2."""
    try:
        yield
    except UsageError:
        raise
    except ZofoError as err:
        raise UsageError(err.what, err.fix, err.key) from err
