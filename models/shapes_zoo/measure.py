"""Measurements of zoo models through their real loading paths.

geneval_shapes: a pipeline folder is loaded with DiffusionPipeline.from_pretrained, generates 32x32
images for held-out benchmark prompts, and models.shapes.verify plus
benchmark.geneval_accuracy give GenEval-shapes accuracy with bootstrap CIs.

verifier_agreement: how often a reward orders two images of one prompt as the verifier does: a correct
render above each of its wrong renders, and a generated image that passes above one of the same prompt
that fails. Ties count one half (a constant reward scores 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.shapes import benchmark, render, render_wrong, verify
from models.shapes.specs import heldout_specs
from models.stats import mean_ci

from .data import applicable_kinds


@dataclass
class EvalImages:
    """One generator's images of eval specs and the verifier's verdict on each (generate_and_verify's result)."""

    specs: list[dict]
    images: list[list[np.ndarray]]  # per spec, images_per_prompt uint8 (32, 32, 3)
    passed: list[list[bool]]

    def results(self) -> list[tuple[str, bool]]:
        """(task tag, passed) per image, specs in order: benchmark.geneval_accuracy's input."""
        return [(s["tag"], ok) for s, oks in zip(self.specs, self.passed) for ok in oks]

    def prompts(self) -> list[str]:
        """The prompt of each entry of results(): the bootstrap's resampling unit."""
        return [s["prompt"] for s, oks in zip(self.specs, self.passed) for _ in oks]


def eval_specs(n_per_task: int, seed: int) -> list[dict]:
    """Up to n_per_task held-out benchmark prompts per task (seeded choice), each prompt once."""
    rng = np.random.default_rng(seed)
    out = []
    for specs in heldout_specs().values():
        pick = rng.permutation(len(specs))[: min(n_per_task, len(specs))]
        out += [specs[int(i)] for i in sorted(pick)]
    return out


def load_pipeline(folder: Path | str):
    """A saved zoo pipeline loaded as any user would (DiffusionPipeline.from_pretrained), float32, on the CPU,
    progress bar off."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate_and_verify(
    pipe,
    specs: list[dict],
    images_per_prompt: int,
    seed: int,
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 96,
) -> EvalImages:
    """Generate images_per_prompt images per spec (one seeded generator per image) and verify each."""
    jobs = [(i, j) for i in range(len(specs)) for j in range(images_per_prompt)]
    images: list[list[np.ndarray]] = [[] for _ in specs]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + i * 97 + j) for i, j in chunk]
        out = pipe(
            prompt=[specs[i]["prompt"] for i, _ in chunk],
            generator=gens,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=32,
            width=32,
            output_type="np",
        ).images
        for (i, _), im in zip(chunk, out):
            images[i].append((im * 255).round().clip(0, 255).astype(np.uint8))  # as numpy_to_pil does
    passed = [[verify(im, spec) for im in ims] for spec, ims in zip(specs, images)]
    return EvalImages(specs, images, passed)


def geneval_shapes(
    pipeline_folder: Path | str,
    n_per_task: int = 48,
    images_per_prompt: int = 4,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 4.0,
) -> dict:
    """benchmark.geneval_accuracy of the pipeline on eval-split specs: {"overall": {...}, "tasks": {...}}."""
    ev = generate_and_verify(
        load_pipeline(pipeline_folder), eval_specs(n_per_task, seed), images_per_prompt, seed, steps, guidance
    )
    return benchmark.geneval_accuracy(ev.results(), prompts=ev.prompts())


def _load_reward(reward):
    """A reward object as is; a folder becomes the project's clipscore reward with `local-dir:`."""
    if hasattr(reward, "score"):
        return reward
    from models.rewards import load_reward
    from synrank.config import RewardSpec

    folder = Path(reward).resolve()
    return load_reward(RewardSpec(name=folder.name, kind="clipscore", arch=f"local-dir:{folder}"))


def _score(reward, images: list[np.ndarray], prompts: list[str], batch: int = 256) -> np.ndarray:
    out = [
        reward.score([Image.fromarray(im) for im in images[s : s + batch]], prompts[s : s + batch])
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def _summary(wins: np.ndarray, seed: int) -> dict:
    lo, hi = mean_ci(wins, seed=seed)
    return {"agreement": float(wins.mean()) if len(wins) else float("nan"), "ci95": [lo, hi], "n": int(len(wins))}


def rendered_pairs(n_per_task: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, str, str]]:
    """(correct render, wrong render, prompt, kind) on eval-split specs, kept where the verifier passes
    the first and fails the second (it nearly always does)."""
    rng = np.random.default_rng([seed, 6])
    out = []
    for spec in eval_specs(n_per_task, seed):
        good = render(spec, 32, rng)
        if not verify(good, spec):
            continue
        for kind in applicable_kinds(spec):
            bad, _ = render_wrong(spec, kind, 32, rng, avoid_reserved=False)  # eval text: no training leak
            if not verify(bad, spec):
                out.append((good, bad, spec["prompt"], kind))
    return out


def generated_pairs(sets: list[EvalImages], max_pairs: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(passing, failing, prompt) images of one prompt from one generator, a seeded subset of them all."""
    pairs = [
        (a, b, s["prompt"])
        for ev in sets
        for s, ims, oks in zip(ev.specs, ev.images, ev.passed)
        for a, ok_a in zip(ims, oks)
        if ok_a
        for b, ok_b in zip(ims, oks)
        if not ok_b
    ]
    if len(pairs) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[i] for i in sorted(keep)]
    return pairs


def _wins(reward, goods: list[np.ndarray], bads: list[np.ndarray], prompts: list[str]) -> np.ndarray:
    sg, sb = _score(reward, goods, prompts), _score(reward, bads, prompts)
    return (sg > sb) + 0.5 * (sg == sb)


def verifier_agreement(
    reward,
    n_per_task: int = 24,
    seed: int = 0,
    generated: list[EvalImages] | None = None,
    max_generated_pairs: int = 2000,
    pairs: list | None = None,
) -> dict:
    """Agreement with the verifier on rendered (correct, wrong) pairs, per kind, and on generated pairs.

    `reward` is a reward folder (loaded as clipscore via models.rewards.load_reward) or any object with
    score(images, prompts); `pairs` reuses rendered_pairs(...) across rewards."""
    reward = _load_reward(reward)
    pairs = rendered_pairs(n_per_task, seed) if pairs is None else pairs
    wins = _wins(reward, [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])
    kinds = np.array([p[3] for p in pairs])
    out = {
        "rendered": _summary(wins, seed),
        "per_kind": {k: _summary(wins[kinds == k], seed) for k in dict.fromkeys(kinds.tolist())},
    }
    if generated:
        gp = generated_pairs(generated, max_generated_pairs, seed)
        out["generated"] = _summary(_wins(reward, [p[0] for p in gp], [p[1] for p in gp], [p[2] for p in gp]), seed)
    return out
