"""synrank.registry: a module re-executed by `importlib.reload` (or IPython's %autoreload) registers its
entries again and replaces them; any other second registration of a name is refused with a clear error."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from synrank.registry import Registry

PLUGIN = """
from registry_holder import THINGS


@THINGS.register("thing")
class Thing:
    version = {version}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A registry in one module (`registry_holder.THINGS`) and a plugin module registering "thing" in it."""
    (tmp_path / "registry_holder.py").write_text(
        "from synrank.registry import Registry\n\nTHINGS = Registry('thing')\n"
    )
    (tmp_path / "thing_plugin.py").write_text(PLUGIN.format(version=1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a .pyc of the same second and size would be reused
    yield tmp_path
    for name in ("registry_holder", "thing_plugin"):
        sys.modules.pop(name, None)


def test_reloading_a_module_replaces_its_entries(plugin: Path) -> None:
    import registry_holder
    import thing_plugin

    first = registry_holder.THINGS.get("thing")
    assert first is thing_plugin.Thing and first.version == 1
    (plugin / "thing_plugin.py").write_text(PLUGIN.format(version=2))  # edited, as %autoreload would see it
    importlib.invalidate_caches()
    importlib.reload(thing_plugin)
    second = registry_holder.THINGS.get("thing")
    assert second is thing_plugin.Thing and second is not first and second.version == 2
    assert registry_holder.THINGS.names() == ["thing"]


def _definition(version: int) -> type:
    class Thing:  # the same __module__ and __qualname__ on every call, as a reloaded module's class
        pass

    Thing.version = version
    return Thing


def test_the_same_definition_registered_again_replaces_the_old_entry() -> None:
    things: Registry[type] = Registry("thing")
    first, second = _definition(1), _definition(2)
    things.register("a")(first)
    assert things.register("a")(second) is second
    assert things.get("a") is second


def test_another_object_under_a_taken_name_is_refused() -> None:
    things: Registry[type] = Registry("thing")

    @things.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match=r"^thing 'a' is registered twice$"):

        @things.register("a")
        class B:
            pass

    assert things.get("a") is A


def test_plain_instances_under_a_taken_name_are_refused_even_of_one_class() -> None:
    # An instance has no __qualname__ of its own: nothing says the second one is the first one reloaded.
    things: Registry[object] = Registry("thing")
    things.register("a")(_definition(1)())
    with pytest.raises(ValueError, match=r"^thing 'a' is registered twice$"):
        things.register("a")(_definition(1)())


def test_reloading_the_objectives_module_keeps_its_registry() -> None:
    """Objectives are dataclass instances: re-executing models/objectives/builtin.py (what %autoreload does) makes
    equal definitions, so it replaces them; another objective under a taken name is still refused."""
    import importlib

    from models import objectives
    from models.objectives import builtin

    names = objectives.OBJECTIVES.names()
    importlib.reload(builtin)
    assert objectives.OBJECTIVES.names() == names
    objectives.OBJECTIVES.register("rankdpo")(objectives.Objective(pairs=objectives.rankdpo_pairs))
    with pytest.raises(ValueError, match=r"^objective 'rankdpo' is registered twice$"):
        objectives.OBJECTIVES.register("rankdpo")(objectives.Objective(pairs=objectives.dpo_pairs))


def test_an_unknown_name_lists_the_known_ones() -> None:
    things: Registry[type] = Registry("thing")
    things.register("b")(_definition(1))
    things.register("a")(type("Other", (), {}))
    with pytest.raises(KeyError, match=r"unknown thing 'c'; known: a, b"):
        things.get("c")
