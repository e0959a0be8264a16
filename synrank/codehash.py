"""The code a stage runs: the project modules its flow imports, followed transitively.

A stage's fingerprint hashes these files and nothing else, so editing a module the stage never
imports (a comment in the zoo trainer, a test) does not make it stale, and dvc.yaml's code deps are
the same list (`python -m synrank.codehash --write` rewrites them; a test checks they agree).

Imports are read with `ast`, including those inside functions (the project imports heavy modules
lazily). A registry package that calls `import_all("pkg")` loads every module of that package, so
such a call counts as importing all of them.

    python -m synrank.codehash            # print each stage's code files
    python -m synrank.codehash --count    # how many files each stage's code is
    python -m synrank.codehash --write    # rewrite the code part of dvc.yaml's deps
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
from functools import cache
from pathlib import Path

from synrank.config import CODE_ROOT
from synrank.stages import DVC_STAGES

PACKAGES = ("synrank", "flows", "tasks", "models", "cli")
STAGES = DVC_STAGES  # the DVC stages whose code deps this module writes


def module_file(name: str) -> Path | None:
    """The file of a project module or package (`models.generators` -> models/generators/__init__.py)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = CODE_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(CODE_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _package_modules(package: str) -> list[str]:
    init = module_file(package)
    if init is None or init.name != "__init__.py":
        return []
    return sorted(f"{package}.{p.stem}" for p in init.parent.glob("*.py") if p.stem != "__init__")


@cache
def direct_imports(path: Path) -> tuple[str, ...]:
    """Project modules named by one file's import statements and `import_all("...")` calls."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(base)
            found += [f"{base}.{a.name}" for a in node.names]  # `from pkg import module`
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_all":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found += _package_modules(node.args[0].value)
    return tuple(found)


def _with_parents(name: str) -> list[str]:
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(roots: list[str]) -> list[Path]:
    """Every project file that importing `roots` can execute, sorted."""
    seen: set[Path] = set()
    todo = [n for r in roots for n in _with_parents(r)]
    while todo:
        f = module_file(todo.pop())
        if f is None or f in seen:
            continue
        seen.add(f)
        todo += [n for m in direct_imports(f) for n in _with_parents(m)]
    return sorted(seen)


def stage_files(stage: str) -> list[str]:
    """The project files (relative paths) that the stage's flow runs."""
    return [p.relative_to(CODE_ROOT).as_posix() for p in closure([f"flows.{stage}"])]


def stage_code_id(stage: str) -> str:
    """sha256 over the stage's code files (names and bytes)."""
    h = hashlib.sha256()
    for rel in stage_files(stage):
        h.update(rel.encode() + b"\0" + (CODE_ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _deps_line(indent: str, data_deps: list[str], code: list[str]) -> str:
    items = data_deps + code
    lines, line = [], f"{indent}deps: ["
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "]")
        if len(line) + len(piece) > 110:
            lines.append(line.rstrip())
            line = indent + "       "
        line += piece
    return "\n".join([*lines, line])


def write_dvc_deps(dvc_yaml: Path = CODE_ROOT / "dvc.yaml") -> bool:
    """Rewrite each stage's `deps: [...]` in dvc.yaml: its non-code deps kept, its code deps = stage_files.
    Returns whether the file changed."""
    text = dvc_yaml.read_text()
    for stage in STAGES:
        pattern = re.compile(rf"(\n  {stage}:\n(?:    .*\n)*?)(    )deps: \[([^\]]*)\]")
        m = pattern.search(text)
        if m is None:
            raise ValueError(f"dvc.yaml: stage '{stage}' has no one-list `deps: [...]`")
        old = [d.strip() for d in m.group(3).replace("\n", " ").split(",") if d.strip()]
        data_deps = [d for d in old if d.split("/")[0] not in PACKAGES]
        text = text[: m.start(2)] + _deps_line(m.group(2), data_deps, stage_files(stage)) + text[m.end() :]
    changed = text != dvc_yaml.read_text()
    dvc_yaml.write_text(text)
    return changed


if __name__ == "__main__":
    if "--write" in sys.argv:
        print("dvc.yaml updated" if write_dvc_deps() else "dvc.yaml already matches")
    elif "--count" in sys.argv:
        for s in STAGES:
            print(f"{s}: {len(stage_files(s))} files")
    else:
        for s in STAGES:
            print(f"{s}: {' '.join(stage_files(s))}")
