"""Where model weights come from: a local folder or file (relative to the project root), or a hub id; and
which weights a train stage output (tuned.json) stands for."""

from __future__ import annotations

import json
import os
from pathlib import Path

from synrank.config import ROOT, GeneratorSpec


def resolve_model_path(path: str, what: str) -> str:
    """A local path that exists -> its absolute form; something shaped like `org/name` -> the hub id,
    unless the hub is off (HF_HUB_OFFLINE) or it is not in the local cache; else one clear error."""
    local = Path(path).expanduser()
    local = local if local.is_absolute() else ROOT / local
    if local.exists():
        return str(local)
    looks_like_id = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if looks_like_id:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(path, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
                raise FileNotFoundError(
                    f"{what}: '{path}' is not a local path and the hub is offline (HF_HUB_OFFLINE) with no cached copy"
                ) from None
            return path
    raise FileNotFoundError(f"{what}: model path '{path}' does not exist (looked at {local})")


def tuned_spec(model_dir: Path) -> tuple[GeneratorSpec, GeneratorSpec]:
    """(base, tuned) generator specs from a folder written by models.trainer.save_tuned; the tuned one points at it."""
    info = json.loads((model_dir / "tuned.json").read_text())
    base = GeneratorSpec.model_validate(info["base"])
    update = {"lora": str(model_dir)} if info["kind"] == "lora" else {"path": str(model_dir / "pipeline")}
    return base, base.model_copy(update={"name": f"{base.name}-tuned", **update})
