"""The one exception type zofo raises for bad input: a message that says what and how to fix it; and the category of
zofo's own warnings."""

from __future__ import annotations


class ZofoError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line, without a traceback."""

    def __init__(self, what: str, fix: str | None = None, key: str | None = None):
        self.what = what
        self.fix = fix
        self.key = key  # the config key (dotted path) the error is about, if any
        super().__init__(what if fix is None else f"{what} ({fix})")


class UsageError(ZofoError):
    """A command refused before it ran anything: a bad flag or config value, a run folder it would overwrite.
    The CLI exits 2 on it, as argparse does on a bad flag, against 1 for an error met while running."""


class ZofoWarning(UserWarning):
    """Something that works but probably not as meant (e.g. half precision computed on the CPU); the CLI prints it
    as one line."""
