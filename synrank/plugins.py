"""The names of every plugin (objectives, generator backends, reward kinds, benchmarks), read from their
files without importing them.

Why read and not import: the config types these names (`Literal` fields, so the JSON schema, the Prefect
form's choices and the error message come from one place), and every stage imports the config. Importing
the plugins there would make every stage's code (synrank.codehash, its fingerprint and dvc.yaml deps)
cover every reward, benchmark and generator: editing a reward file would retrain. A plugin registers
itself with `@REGISTRY.register("name")` or `REGISTRY.register("name")(...)`; those calls are found in
its folder's files with `ast`, the name a string literal or a module-level string constant.
tests/test_plugins.py checks that the names read here equal the registries filled by importing.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from synrank.config_base import CODE_ROOT

# kind -> (the folder whose files are the plugins, the registry variables they register in)
PLUGIN_FOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "objective": ("models/objectives", ("OBJECTIVES",)),
    "generator backend": ("models/generators", ("GENERATORS",)),
    "reward kind": ("models/rewards", ("REWARDS",)),
    "benchmark": ("models/benchmarks", ("BENCHMARKS", "SCORED")),
}


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments (a plugin may register under a constant)."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def registered_in(path: Path, registries: tuple[str, ...]) -> list[str]:
    """The names one file registers in `registries` (`X.register("name")` with X one of them)."""
    text = path.read_text()
    if ".register(" not in text:  # most files of a folder are helpers: nothing to parse
        return []
    tree = ast.parse(text, filename=str(path))
    constants = _constants(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if not (isinstance(func, ast.Attribute) and func.attr == "register" and node.args):
            continue
        if not (isinstance(func.value, ast.Name) and func.value.id in registries):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value)
        elif isinstance(arg, ast.Name) and arg.id in constants:
            names.append(constants[arg.id])
    return names


@cache
def plugin_names(kind: str) -> tuple[str, ...]:
    """The sorted names of one kind of plugin (a key of PLUGIN_FOLDERS), as its registry will hold them."""
    folder, registries = PLUGIN_FOLDERS[kind]
    return tuple(sorted({n for f in sorted((CODE_ROOT / folder).glob("*.py")) for n in registered_in(f, registries)}))


def plugin_key(kind: str, what: str, *extra: str) -> Any:
    """The config type of a field that names a plugin of `kind`: a string that must be one of its names (or
    of `extra`, e.g. "" for none), with the names as the JSON schema's `enum` (the Prefect form's choices).
    A bad value fails where it is written: "'rankdop' is not <what>; allowed: dpo, gpo, ..."."""
    names = plugin_names(kind)

    def check(value: str) -> str:
        if value not in (*extra, *names):
            raise PydanticCustomError(
                "plugin_name", "is not {what}; allowed: {allowed}", {"what": what, "allowed": ", ".join(names)}
            )
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": [*extra, *names]})]
