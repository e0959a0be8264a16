"""The generate stage stores each image's final latents beside its PNG, and training uses them.

Stored latents are exactly the pipeline's own (output_type="latent", same seeds, same batches) and decode
to the stored PNG bytes; training on them encodes nothing, and a base with another VAE (or another
training size) falls back to encoding the PNGs, counted either way."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from models.generators.base import component_id, seeded_generators
from models.train_data import _cache_key, latent_shape, usable_stored
from synrank.config import GeneratorSpec, TrainConfig
from synrank.fingerprint import generator_id
from synrank.shards import LATENT_SUFFIX, load_arrays, load_images, load_members, png_bytes, read_shard
from tests.fixtures.tiny_models import build_tiny_sd

pytestmark = pytest.mark.slow  # renders through the fan-out engine (a Prefect server) and trains

K, BATCH, SHARD = 3, 2, 6  # the shard size is a multiple of the batch: generation batches are BATCH-row chunks
PROMPTS = [f"a photo of {i} red circles" for i in range(4)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny SD pipeline's images of PROMPTS (K each) in shards, the manifest, and a second pipeline
    whose VAE has other weights."""
    from synrank.cluster_config import ClusterConfig, FanOut
    from tasks.generate import plan_images, render_plans, write_manifest

    root = tmp_path_factory.mktemp("latents")
    model = build_tiny_sd(root / "model", seed=4, channels=(16, 32))
    other = build_tiny_sd(root / "other", seed=9, channels=(16, 32))
    spec = GeneratorSpec(name="g", path=str(model), steps=2, guidance=4.0, height=32, width=32)
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS})
    plan = plan_images(prompts, "g", K, 3, SHARD, generator=generator_id(spec))
    images = root / "images"
    plan_path = images / "plans" / "g.parquet"
    plan_path.parent.mkdir(parents=True)
    plan.to_parquet(plan_path, index=False)
    render_plans({"g": (spec, plan)}, images, BATCH, "cpu", FanOut(), ClusterConfig())
    manifest = pd.read_parquet(write_manifest.fn([str(plan_path)], str(images)))
    return SimpleNamespace(root=root, spec=spec, other=str(other), images=images, manifest=manifest)


def _pipe(path: str):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _batches(manifest: pd.DataFrame) -> list[pd.DataFrame]:
    return [manifest.iloc[i : i + BATCH] for i in range(0, len(manifest), BATCH)]


def test_manifest_records_the_latents_and_their_vae(world: SimpleNamespace) -> None:
    m = world.manifest
    assert list(m["latent_member"]) == [f"{i}{LATENT_SUFFIX}" for i in m["image_id"]]
    assert set(m["latent_shape"]) == {"4x8x8"}  # 4 channels, the tiny VAE's 4x downsampling of 32 px
    assert set(m["latent_vae"]) == {component_id(world.spec.path, "vae")}
    data = load_members(world.images, zip(m["shard"], m["latent_member"]))
    assert list(m["latent_sha256"]) == [hashlib.sha256(d).hexdigest() for d in data]
    first = m["shard"].iloc[0]
    names = [n for n, _ in read_shard(first, world.images)]
    assert names == [n for i in m[m["shard"] == first]["image_id"] for n in (f"{i}.png", f"{i}{LATENT_SUFFIX}")]


@pytest.mark.slow
@torch.no_grad()
def test_stored_latents_are_the_pipelines_own_and_decode_to_the_stored_png(world: SimpleNamespace) -> None:
    pipe, spec = _pipe(world.spec.path), world.spec
    for batch in _batches(world.manifest):
        own = pipe(
            prompt=list(batch["prompt"]),
            generator=seeded_generators(list(batch["seed"])),
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            height=spec.height,
            width=spec.width,
            output_type="latent",
        ).images
        stored = torch.from_numpy(np.stack(load_arrays(world.images, zip(batch["shard"], batch["latent_member"]))))
        assert stored.dtype == torch.float32 and torch.equal(stored, own)
        # Decoded as StableDiffusionPipeline does (no safety checker in the tiny pipeline), as one batch.
        pixels = pipe.vae.decode(stored / pipe.vae.config.scaling_factor, return_dict=False)[0]
        decoded = [png_bytes(im) for im in pipe.image_processor.postprocess(pixels, output_type="pil")]
        assert decoded == load_members(world.images, zip(batch["shard"], batch["member"]))


def _ranked(manifest: pd.DataFrame) -> pd.DataFrame:
    """Each prompt's K images strictly ranked by index, with the manifest columns training reads."""
    ranked = manifest.assign(phi=manifest["index"] / (K - 1), tau=K - manifest["index"])
    return ranked[
        [
            "image_id",
            "prompt_id",
            "prompt",
            "phi",
            "tau",
            "sha256",
            "latent_member",
            "latent_sha256",
            "latent_shape",
            "latent_vae",
        ]
    ]


def _train(world: SimpleNamespace, base: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, int]:
    """train() on the world's images with `base` as the base model: (final metrics, VAE encode calls)."""
    from diffusers import AutoencoderKL

    from models.trainer import train

    calls = []
    encode = AutoencoderKL.encode

    def counted(self, x, *args, **kwargs):
        calls.append(len(x))
        return encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counted)
    m = world.manifest.set_index("image_id")

    def members(ids: list[str], column: str) -> zip:
        return zip(m.loc[ids, "shard"], m.loc[ids, column])

    cfg = TrainConfig(steps=1, prompts_per_step=2, lora_rank=2, log_every=1, checkpoint_every=0, holdout_fraction=0.0)
    spec = world.spec.model_copy(update={"path": base})
    final = train(
        spec,
        cfg,
        _ranked(world.manifest),
        lambda ids: load_images(world.images, members(ids, "member")),
        out,
        latents=lambda ids: load_arrays(world.images, members(ids, "latent_member")),
    )
    return final, len(calls)


def test_training_on_stored_latents_encodes_nothing(
    world: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final, encoded = _train(world, world.spec.path, tmp_path, monkeypatch)
    n = len(world.manifest)
    assert (final.latents["latents_stored"], final.latents["latents_encoded"], encoded) == (n, 0, 0)
    # The training latents are the stored arrays themselves (the cached groups, in build_groups' order).
    (cache,) = (tmp_path / "cache").glob("groups-*")
    groups = {"latents": torch.from_numpy(np.load(cache / "latents.npy")), **torch.load(cache / "groups.pt")}
    order = _ranked(world.manifest).sort_values(["prompt_id", "tau", "image_id"])
    stored = load_arrays(
        world.images, zip(world.manifest.set_index("image_id").loc[order["image_id"], "shard"], order["latent_member"])
    )
    assert torch.equal(groups["latents"], torch.from_numpy(np.stack(stored))) and bool(groups["stored"].all())


def test_a_base_with_another_vae_encodes_the_pngs(
    world: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert component_id(world.other, "vae") != component_id(world.spec.path, "vae")
    final, encoded = _train(world, world.other, tmp_path, monkeypatch)
    assert (final.latents["latents_stored"], final.latents["latents_encoded"]) == (
        0,
        len(world.manifest),
    ) and encoded > 0


def test_stored_latents_need_the_training_shape(world: SimpleNamespace) -> None:
    ranked, vae = _ranked(world.manifest), component_id(world.spec.path, "vae")
    tiny_vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=(16, 32, 32), latent_channels=4))
    assert latent_shape(tiny_vae, (32, 48)) == "4x8x12"
    assert usable_stored(ranked, vae, latent_shape(tiny_vae, 32)).all()
    assert not usable_stored(ranked, vae, latent_shape(tiny_vae, 64)).any()  # train.resolution 64: encode
    assert not usable_stored(ranked.drop(columns=["latent_vae"]), vae, "4x8x8").any()  # an older manifest


def test_latent_cache_keys_on_the_latent_bytes_when_they_are_used(world: SimpleNamespace) -> None:
    ranked = _ranked(world.manifest)
    other = ranked.assign(latent_sha256=ranked["latent_sha256"].str[::-1])  # other latents, same PNGs
    used, unused = pd.Series(True, index=ranked.index), pd.Series(False, index=ranked.index)
    assert _cache_key(ranked, used, (32, 32)) != _cache_key(other, used, (32, 32))
    assert _cache_key(ranked, unused, (32, 32)) == _cache_key(other, unused, (32, 32))
    assert _cache_key(ranked, used, (32, 32)) != _cache_key(ranked, unused, (32, 32))
