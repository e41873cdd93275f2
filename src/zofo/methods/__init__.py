"""Training methods; importing this package registers them all in `zofo.registry.METHODS`."""

from zofo.methods import bilevel, fo, mezo, no_train, zo_sign  # noqa: F401  (registration)
from zofo.methods.base import Method, Settings
from zofo.registry import METHODS

__all__ = ["METHODS", "Method", "Settings"]
