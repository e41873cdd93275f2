"""Name -> object tables: methods, tasks, sources, estimators, updates, schedules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from zofo.errors import ZofoError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named entries that refuses duplicates and lists valid names on a miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@METHODS.register("mezo")`."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ZofoError(f"unknown {self.kind} {name!r}", f"choose one of: {', '.join(sorted(self))}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)


#: training methods (filled by zofo.methods)
METHODS: Registry = Registry("method")
