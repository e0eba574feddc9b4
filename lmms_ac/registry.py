"""A small typed registry with "did you mean" errors, shared by every concept of the project.

Entries are registered by name; looking up an unknown name raises a ``KeyError`` subclass that
lists close matches. Registries are plain objects (no import-time global side effects beyond
module-level definitions) and can be snapshot/restored in tests. Each carries a ``version`` that
every change bumps, so a cache derived from registries keys on their versions instead of a
hand-maintained "something changed" flag.
"""

from __future__ import annotations

import difflib
from typing import Dict, Generic, Iterator, List, Optional, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Raised when a name is not in a registry; the message names close matches."""

    def __init__(self, kind: str, name: str, known: List[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(sorted(known)) or "(none registered)"
        self.message = f"unknown {kind} {name!r}{hint} Known: {listing}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return self.message


class Registry(Generic[T]):
    """Name -> entry mapping for one kind of thing (``kind`` is used in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self.version = 0  #: bumped by every register/unregister/restore

    def register(self, name: str, entry: Optional[T] = None, *, overwrite: bool = False):
        """Register ``entry`` under ``name``; usable as a decorator when ``entry`` is omitted."""

        def _add(obj: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._entries[name] = obj
            self.version += 1
            return obj

        if entry is None:
            return _add
        return _add(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntryError(self.kind, name, list(self._entries)) from None

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._entries[name]
        self.version += 1

    def names(self) -> List[str]:
        return sorted(self._entries)

    def snapshot(self) -> Dict[str, T]:
        return dict(self._entries)

    def restore(self, snapshot: Dict[str, T]) -> None:
        self._entries = dict(snapshot)
        self.version += 1

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
