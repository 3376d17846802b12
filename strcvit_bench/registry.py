"""One registry type for everything a spec or a command names: methods, source kinds, model
families and metrics (lm-eval's pattern).

Entries are registered either eagerly (`@REGISTRY.register("name")` on the object) or lazily as
a `"module:object"` string, so listing names never imports what they name: labelling a
leaderboard row or parsing a spec must not import every method, and torch with them. A name
registered twice for two different objects is an error, not a silent override. Third-party
packages add entries through an entry-point group (`[project.entry-points."strcvit_bench.methods"]
mymethod = "my_pkg.method:MyMethod"`), read once, on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from strcvit_bench.errors import StrcvitError

T = TypeVar("T")


def _target(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


class Registry(Generic[T]):
    """Name → object, with lazy `"module:object"` entries, collision checks and entry points."""

    def __init__(self, kind: str, entry_point_group: str | None = None, hint: str = ""):
        self.kind = kind
        self.group = entry_point_group
        self.hint = hint
        self._entries: dict[str, T | str] = {}
        self._origin: dict[str, str] = {}
        self._entry_points_read = entry_point_group is None

    # --- registration ---------------------------------------------------------------------------

    def register(self, name: str, obj: T | str | None = None, *, origin: str = "") -> Any:
        """Register `obj` (an object or a lazy `"module:object"` string) under `name`; without
        `obj`, a decorator. Registering the object a lazy entry already names resolves it."""
        if obj is None:
            def decorate(target: T) -> T:
                self.register(name, target, origin=origin)
                return target

            return decorate
        if isinstance(obj, str) and ":" not in obj:
            raise ValueError(f"lazy {self.kind} entry {obj!r} must read 'module:object'")
        old = self._entries.get(name)
        if old is not None and old is not obj and not self._same(old, obj):
            where = f" (from {origin})" if origin else ""
            raise StrcvitError(f"{self.kind} {name!r}{where} is already registered as "
                               f"{old if isinstance(old, str) else _target(old)}{self._origin_text(name)}")
        if old is None or isinstance(old, str):
            self._entries[name] = obj
            self._origin[name] = origin
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's temporary method, say); unknown names are ignored."""
        self._entries.pop(name, None)
        self._origin.pop(name, None)

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        """A lazy entry and the object it names are one entry (a module that registers itself)."""
        name_a = a if isinstance(a, str) else _target(a)
        name_b = b if isinstance(b, str) else _target(b)
        return name_a == name_b

    def _origin_text(self, name: str) -> str:
        origin = self._origin.get(name)
        return f" (from {origin})" if origin else ""

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            package = ep.dist.name if ep.dist is not None else "an installed package"
            self.register(ep.name, ep.value, origin=f"entry point of {package}")

    # --- lookup ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every registered name, in registration order; imports nothing."""
        self._read_entry_points()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The object registered as `name`, imported on first use; unknown names are a usage error."""
        self._read_entry_points()
        if name not in self._entries:
            raise StrcvitError(f"unknown {self.kind} {name!r}; available: {', '.join(self._entries)}"
                               + (f" ({self.hint})" if self.hint else ""))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise StrcvitError(f"{self.kind} {name!r}{self._origin_text(name)} names {entry}, "
                                   f"which does not import: {exc}") from None
            self._entries[name] = obj
            entry = obj
        return entry  # type: ignore[return-value]

    def items(self) -> list[tuple[str, T]]:
        """Every entry, imported."""
        return [(name, self.get(name)) for name in self.names()]
