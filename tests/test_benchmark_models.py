"""The model paths of the benchmarks with tiny random weights loaded through from_pretrained: OWLv2 and
CLIP behind GenEval, BLIP-VQA, T2I-CompBench from the config to the evaluate stage's scores, and CLIP's
77-token window on DPG-Bench's dense prompts (models.prompt_fit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.benchmarks import load_benchmark
from models.benchmarks.geneval import GENEVAL_COLORS, GenEvalOwlv2
from models.benchmarks.t2i_compbench import AttributeVqaScorer
from models.prompt_fit import count_tokens, fit_prompt, fit_prompts
from models.shapes.verify import Detection
from tests.fixtures.benchmarks import (
    COLOR_ATTR,
    IMAGE,
    LONG,
    det,
    save_tiny_blip,
    save_tiny_clip,
    save_tiny_dpt,
    save_tiny_owlv2,
)


@pytest.fixture(scope="module")
def clip_tok():
    from tests.fixtures.tiny_models import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, clip_tok) -> dict[str, str]:
    import torch

    root = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)  # one seed for the three, built in this order
    return {
        "owlv2": save_tiny_owlv2(root / "owlv2", clip_tok),
        "clip": save_tiny_clip(root / "clip", clip_tok),
        "blip": save_tiny_blip(root / "blip"),
        "depth": save_tiny_dpt(root / "depth"),
    }


@pytest.mark.slow
def test_geneval_owlv2_and_clip_end_to_end(tiny_models: dict[str, str]) -> None:
    from models.benchmarks.vision import ClipColorClassifier, ClipEncoder, Owlv2Detector

    bench = GenEvalOwlv2(owlv2=tiny_models["owlv2"], clip=tiny_models["clip"])
    tag, passed = bench.judge(Image.new("RGB", (48, 40), "blue"), COLOR_ATTR)  # content irrelevant: random weights
    assert tag == "color_attr" and isinstance(passed, bool)
    dets = Owlv2Detector(tiny_models["owlv2"], min_score=0.0).detect(IMAGE, ["car", "bench"])
    assert isinstance(dets, list) and dets and all(d.cls in ("car", "bench") for d in dets)
    assert all(0 <= d.box[0] <= d.box[2] <= 100 and 0 <= d.box[1] <= d.box[3] <= 100 for d in dets)
    colors = ClipColorClassifier(ClipEncoder(tiny_models["clip"]), GENEVAL_COLORS)
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True
    found = colors.classify(
        IMAGE, [det("car", 0.9, (10, 10, 30, 30)), Detection("car", (5.0, 5.0, 5.0, 5.0), 0.9, mask=mask)], "car"
    )
    assert len(found) == 2 and set(found) <= set(GENEVAL_COLORS)


def test_blip_vqa_yes_probability(tiny_models: dict[str, str]) -> None:
    from models.benchmarks.vision import BlipVqa

    vqa = BlipVqa(tiny_models["blip"])
    p = vqa.vqa_yes_probability(IMAGE, "a green bench?")
    assert 0.0 < p < 1.0
    both = AttributeVqaScorer(vqa)(IMAGE, "a green bench and a red car")
    assert both == pytest.approx(p * vqa.vqa_yes_probability(IMAGE, "a red car?"), rel=1e-5)


def check_config_needs_t2i_weights(tiny_models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Config validation refuses t2i-compbench while its weights are absent (naming the first and its
    setting) and accepts it once the settings point at the tiny weights (left set for the caller)."""
    from models.benchmarks.geneval import OWLV2_ENV
    from models.benchmarks.t2i_compbench import BLIP_ENV, CLIP_ENV
    from models.validate import load_checked_config
    from synrank.config import ConfigError

    depth_env = "SYNRANK_T2I_DEPTH"
    for env in (BLIP_ENV, CLIP_ENV, OWLV2_ENV, depth_env):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError, match=f"'evaluate.benchmarks.0': 't2i-compbench' needs weights .*{BLIP_ENV}"):
        load_checked_config(overrides=["evaluate.benchmarks=[t2i-compbench]"])
    for env, key in ((BLIP_ENV, "blip"), (CLIP_ENV, "clip"), (OWLV2_ENV, "owlv2"), (depth_env, "depth")):
        monkeypatch.setenv(env, tiny_models[key])
    assert load_checked_config(overrides=["evaluate.benchmarks=[t2i-compbench]"]).evaluate.benchmarks == [
        "t2i-compbench"
    ]


def t2i_prompt_table(folder: Path) -> pd.DataFrame:
    """Three T2I-CompBench files written to folder and read by the sample stage's reader: prompt_id, meta."""
    from synrank.config import PromptSource
    from tasks.sample import read_prompt_sources

    (folder / "color_val.txt").write_text("a green bench and a red car\na red bench\n")
    (folder / "spatial_train.txt").write_text("a car on the left of a bench\n")
    (folder / "non_spatial_val.txt").write_text("a man is playing the guitar\n")
    rows, _ = read_prompt_sources(
        [
            PromptSource(path=str(folder / f), format="t2i-compbench")
            for f in ("color_val.txt", "spatial_train.txt", "non_spatial_val.txt")
        ]
    )
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(rows))], "meta": [r["meta"] for r in rows]})


def write_image_shards(prompts: pd.DataFrame, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Image.Image]]:
    """Two 32x32 images per prompt for models base and tuned, one shard each: (manifest rows, images by member)."""
    from synrank.shards import png_bytes, write_shard

    manifest, images = [], {}
    for model, colour in (("base", "white"), ("tuned", "red")):
        for pid in prompts["prompt_id"]:
            for i in range(2):
                member = f"{model}-{pid}-{i}.png"
                images[member] = Image.new("RGB", (32, 32), colour if i else "green")
                manifest.append(
                    {"model": model, "prompt_id": pid, "index": i, "shard": f"{model}.tar", "member": member}
                )
        write_shard(f"{model}.tar", [(m, png_bytes(im)) for m, im in images.items() if m.startswith(model)], folder)
    return manifest, images


@pytest.mark.slow
def test_t2i_compbench_from_the_config_on_tiny_weights(
    tiny_models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate.benchmarks: [t2i-compbench]`: refused at config validation while its weights are absent
    (naming them and the setting), accepted once the settings point at weights, and the evaluate stage's
    run_benchmark scores prompts read by the sample stage's reader with tiny random BLIP/CLIP/OWLv2."""
    from tasks.evaluate import run_benchmark

    check_config_needs_t2i_weights(tiny_models, monkeypatch)
    prompts = t2i_prompt_table(tmp_path)
    manifest, images = write_image_shards(prompts, tmp_path)
    out, paired, judged = run_benchmark.fn(
        "t2i-compbench", pd.DataFrame(manifest), prompts, str(tmp_path), pair=("base", "tuned")
    )

    # Every image's score is the scorer's own on that image, and the summaries are the plain means.
    bench = load_benchmark("t2i-compbench")
    metas = {pid: json.loads(m) for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    want = [
        bench.judge(images[f"{m}-{p}-{i}.png"], metas[p])[1]
        for m, p, i in zip(judged["model"], judged["prompt_id"], judged["index"])
    ]
    assert judged["value"].tolist() == pytest.approx(want) and len(judged) == 16
    assert set(judged["task"]) == {"color", "spatial", "non_spatial"}
    assert all(0.0 <= v <= 1.0 for v, t in zip(want, judged["task"]) if t != "non_spatial")  # CLIP: a cosine
    means = judged.groupby(["model", "task"])["value"].mean()
    for model in ("base", "tuned"):
        assert out[model]["overall"]["accuracy"] == pytest.approx(means[model].mean())
        assert out[model]["tasks"]["color"]["n_prompts"] == 2 and out[model]["tasks"]["color"]["n"] == 4
    assert paired["delta"] == pytest.approx((means["tuned"] - means["base"]).mean()) and paired["n_prompts"] == 4


# --- DPG-Bench's dense prompts in CLIP's window --------------------------------------------------------


def test_fit_prompt_truncates_and_counts(clip_tok) -> None:
    prompts = ["a red cube", LONG, LONG + " " + LONG, "two dogs"]
    assert count_tokens(clip_tok, LONG) > 75  # the long one really is over CLIP's 77 (75 + start/end)
    fitted, report = fit_prompts(prompts, clip_tok, 77, "truncate")
    assert (report.n_prompts, report.n_over_limit, report.n_truncated, report.n_chunked) == (4, 2, 2, 0)
    assert report.over_limit_ids == [1, 2] and report.tokens_dropped > 0
    assert fitted[0].texts == ["a red cube"] and not fitted[0].truncated
    for f in fitted[1:3]:
        (text,) = f.texts
        assert f.truncated and LONG.startswith(text) and count_tokens(clip_tok, text) <= 75
        # Whole words only, and as many as fit: one more word would not.
        assert count_tokens(clip_tok, LONG[: LONG.index(" ", len(text) + 1)]) > 75
    assert len(clip_tok(fitted[1].texts[0])["input_ids"]) <= 77


def test_fit_prompt_chunks(clip_tok) -> None:
    text = LONG + " " + LONG
    fitted, report = fit_prompts([text, "short"], clip_tok, 77, "chunk")
    assert (report.n_over_limit, report.n_chunked, report.n_truncated, report.tokens_dropped) == (1, 1, 0, 0)
    chunks = fitted[0].texts
    assert len(chunks) >= 3 and all(count_tokens(clip_tok, c) <= 75 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # nothing lost, nothing reordered
    pieces = fit_prompt("x" * 400, clip_tok, 16, "chunk").texts  # one "word" longer than the budget
    assert len(pieces) > 1 and all(count_tokens(clip_tok, p) <= 14 for p in pieces)
    with pytest.raises(ValueError, match="mode"):
        fit_prompt("a", clip_tok, 77, "drop")  # type: ignore[arg-type]
