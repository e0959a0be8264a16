"""The inputs a command reads from outside the project's outputs, checked before anything starts: the prompt
files of sample.sources and the generators' model folders. Each problem is one line naming the setting, the
path and what is wrong with it (cli.main prints it and exits 2)."""

from __future__ import annotations

from synrank.config import GeneratorSpec, PromptSource
from synrank.models_io import resolve_model_path
from synrank.prompt_formats import check_folder_format, t2i_category_of, t2i_prompt_files
from synrank.prompts import source_path


def missing_source(sources: list[PromptSource]) -> str:
    """The first prompt source that does not exist, or a T2I-CompBench file whose name gives no category."""
    for i, src in enumerate(sources):
        path = source_path(src.path)
        if not path.exists():
            return f"sample.sources.{i}.path: '{path}' does not exist"
        try:
            if src.format == "t2i-compbench":
                t2i_category_of(path) if path.is_file() else t2i_prompt_files(path)
            check_folder_format(path, src.format)
        except (ValueError, FileNotFoundError) as err:
            return f"sample.sources.{i}.path: {err}"
    return ""


def missing_model(generators: list[GeneratorSpec]) -> str:
    """The first generator whose model (or LoRA) is neither a local folder nor a hub id this machine can use."""
    for i, spec in enumerate(generators):
        for field in ("path", "lora"):
            value = getattr(spec, field)
            if not value:
                continue
            try:
                resolve_model_path(value, f"generate.generators.{i}.{field} (generator '{spec.name}')")
            except FileNotFoundError as err:
                return str(err)
    return ""
