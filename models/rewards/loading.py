"""Loading helpers shared by the reward modules: checkpoint files, open_clip models, pooled features,
and the prompt de-duplication that lets a batch encode each distinct prompt once.

Weights load from safetensors only unless the reward's spec sets `allow_pickle` (the released HPS,
aesthetic and ImageReward checkpoints are pickles: opt in for them, or convert them to safetensors)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from models.generators.base import PickleWeightsError, WeightsFileError, check_weight_files, pickle_error
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path

REWARD_SETTING = "this reward (score.rewards[].allow_pickle)"


def load_state_dict_file(path: str, what: str, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file or, only with allow_pickle, a `torch.save`d one, bare or
    wrapped as {'state_dict': ...} (HPS's training checkpoints), with a DistributedDataParallel 'module.'
    prefix removed. Raises PickleWeightsError for any other file without allow_pickle, ValueError for a
    file that holds no state_dict. Even with allow_pickle, `weights_only=True`: these files come from
    the internet and must not run code when unpickled."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            check_weight_files([path], what)
            obj = load_file(path, device="cpu")
        elif not allow_pickle:
            raise pickle_error(what, path, REWARD_SETTING)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (PickleWeightsError, WeightsFileError):
        raise
    except Exception as err:  # a pickled object (not a state_dict) or a corrupt file
        raise ValueError(
            f"{what}: '{path}' is not a loadable state_dict file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what}: '{path}' does not hold a state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


class _WeightsComeLater(logging.Filter):
    """Drops open_clip's 'initialized randomly' warning for a model whose weights we load next."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def open_clip_source(spec: RewardSpec, arch: str, pretrained: str | None) -> tuple[str, str | None]:
    """Resolve relative `local-dir:` folders and checkpoint files against the project root."""
    if arch.startswith("local-dir:"):
        arch = "local-dir:" + resolve_model_path(arch.removeprefix("local-dir:"), f"reward '{spec.name}'")
    if pretrained and (Path(pretrained).suffix or "/" in pretrained):
        pretrained = resolve_model_path(pretrained, f"reward '{spec.name}'")
    return arch, pretrained


def create_open_clip(
    spec: RewardSpec, arch: str, pretrained: str | None, device: str, weights_later: bool = False
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for an open_clip `arch`: a built-in name (`ViT-H-14`), a
    `local-dir:`/`hf-hub:` source, or a model-config JSON file (registered under its file stem, the way
    open_clip's own `add_model_config` names configs). `pretrained` is a tag or a checkpoint file.
    `weights_later`: the caller loads the weights itself, so open_clip's random-init warning is noise.
    Any checkpoint open_clip would load that is not .safetensors raises PickleWeightsError unless
    spec.allow_pickle (see _safetensors_only)."""
    import open_clip

    if arch.endswith(".json") and not arch.startswith(("local-dir:", "hf-hub:")):
        config = Path(resolve_model_path(arch, f"reward '{spec.name}'"))
        open_clip.add_model_config(config)
        arch = config.stem
    arch, pretrained = open_clip_source(spec, arch, pretrained)
    quiet = _WeightsComeLater()
    if weights_later:
        logging.getLogger().addFilter(quiet)  # open_clip logs through the root logger
    try:
        with _safetensors_only(f"reward '{spec.name}'", spec.allow_pickle):
            model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.eval(), open_clip.get_tokenizer(arch)


@contextmanager
def _safetensors_only(what: str, allow_pickle: bool) -> Iterator[None]:
    """While open_clip builds a model, its checkpoint reader (`open_clip.factory.load_state_dict`, which
    every full-model and tower checkpoint goes through: a pretrained tag's or hf-hub: download, a
    local-dir: folder's file, a checkpoint path) refuses any file but .safetensors, unless allow_pickle.
    Checked here, where the file is known, because a tag's file is only known once open_clip resolves it."""
    import open_clip.factory as factory

    original = factory.load_state_dict
    if allow_pickle:
        yield
        return

    def checked(checkpoint_path: str, *args: Any, **kwargs: Any) -> Any:
        if not str(checkpoint_path).endswith(".safetensors"):
            raise pickle_error(what, checkpoint_path, REWARD_SETTING)
        check_weight_files([checkpoint_path], what)
        return original(checkpoint_path, *args, **kwargs)

    factory.load_state_dict = checked
    try:
        yield
    finally:
        factory.load_state_dict = original


def pooled(out: Any) -> torch.Tensor:
    """transformers 5 `get_image_features`/`get_text_features` return an output object whose
    `pooler_output` holds the projected embedding; transformers 4 returned the tensor itself."""
    if isinstance(out, torch.Tensor):
        return out
    value = getattr(out, "pooler_output", None)
    if value is None:
        raise TypeError(f"expected a tensor or an output with pooler_output, got {type(out).__name__}")
    return value


def unique_prompts(prompts: list[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct prompts in first-seen order and, for each input, the index of its distinct prompt: a
    batch of k images per prompt then runs the text encoder once per prompt, not k times."""
    order = list(dict.fromkeys(prompts))
    position = {p: i for i, p in enumerate(order)}
    return order, torch.tensor([position[p] for p in prompts], dtype=torch.long)


def check_batch(images: list[Any], prompts: list[str]) -> None:
    """ValueError unless there is one prompt per image."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")


def hf_token_window(tokenizer: Any, prompts: list[str], max_length: int) -> tuple[list[int], int]:
    """(content tokens of each prompt, content tokens that fit) for a transformers tokenizer that reads
    `max_length` tokens, its special tokens ([CLS]/[SEP], <|startoftext|>/<|endoftext|>) included."""
    counts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return counts, max_length - tokenizer.num_special_tokens_to_add(pair=False)


def open_clip_token_window(tokenizer: Any, prompts: list[str]) -> tuple[list[int], int]:
    """The same for an open_clip tokenizer: SimpleTokenizer (`encode` gives the BPE ids without
    <start>/<end>, two of its `context_length`) or HFTokenizer (a transformers tokenizer inside)."""
    if hasattr(tokenizer, "encode"):
        return [len(tokenizer.encode(p)) for p in prompts], tokenizer.context_length - 2
    return hf_token_window(tokenizer.tokenizer, prompts, tokenizer.context_length)
