"""A name -> factory map. Generators, rewards, objectives and benchmarks each keep one; a new entry
is one file that decorates its factory with `@REGISTRY.register("name")`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _definition(item: object) -> tuple | None:
    """What a registration is, independent of the module object that made it: (`__module__`,
    `__qualname__`) of a class or function; for a dataclass instance (an objective) its class's and each
    field's definition; None for any other object, which can then never be registered twice. A module
    re-executed by `importlib.reload` makes new objects with the same definitions."""
    module, qualname = getattr(item, "__module__", None), getattr(item, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return (module, qualname)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        fields = tuple(
            (f.name, _definition(v) or repr(v)) for f in dataclasses.fields(item) for v in [getattr(item, f.name)]
        )
        return (_definition(type(item)), fields)
    return None


class Registry(Generic[T]):
    """Entries of one kind (`kind` names it in errors), each registered once under a unique name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers its argument under `name` and returns it unchanged.

        Registering a name again with the same definition (same `__module__` and `__qualname__`: the
        module was re-executed by `importlib.reload` or IPython's %autoreload) replaces the old entry;
        any other object under a taken name raises ValueError "<kind> '<name>' is registered twice".
        """

        def add(item: T) -> T:
            old = self._items.get(name)
            if old is not None and (_definition(old) is None or _definition(old) != _definition(item)):
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        """The entry registered under `name`; KeyError listing the known names if there is none."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)


def import_all(package: str) -> None:
    """Import every module of a package, so that each registers itself: adding an entry is adding a file."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
