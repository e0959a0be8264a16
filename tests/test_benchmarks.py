"""Benchmark plugins: GenEval's rules on hand-made detections, the prompt adapters on the real files and
on files written here, T2I-CompBench's scorers with fakes, DPG-Bench prompt fitting, PartiPrompts
win-rates, and the OWLv2 / CLIP / BLIP paths with tiny random models loaded through from_pretrained."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.benchmarks import BENCHMARKS, load_benchmark
from models.benchmarks.common import ADAPTERS, SCORED
from models.benchmarks.dpg_bench import read_dpg_bench
from models.benchmarks.geneval import COLORS, Detection, GenEval, evaluate, read_geneval, relative_position
from models.benchmarks.geneval_shapes import GenEvalShapes
from models.benchmarks.partiprompts import category_winrates, read_partiprompts
from models.benchmarks.t2i_compbench import (
    AttributeVqaScorer,
    ClipSimilarityScorer,
    ComplexScorer,
    SpatialScorer,
    T2ICompBench,
    noun_phrases,
    parse_spatial,
    read_t2i_compbench,
)
from models.prompt_fit import count_tokens, fit_prompt, fit_prompts
from models.shapes import make_specs
from models.stats import mean_ci
from synrank.config import ROOT

SHARED = ROOT.parent / "shared" / "benchmarks"
GENEVAL_FILE = SHARED / "geneval" / "evaluation_metadata.jsonl"
PARTI_FILE = SHARED / "partiprompts" / "PartiPrompts.tsv"
IMAGE = Image.new("RGB", (100, 100), (200, 30, 30))


def det(label: str, score: float, box=(0.0, 0.0, 10.0, 10.0), color: str | None = None) -> Detection:
    return Detection(label, score, tuple(map(float, box)), color=color)  # type: ignore[arg-type]


def square(cx: float, cy: float = 50.0, side: float = 20.0) -> tuple[float, float, float, float]:
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


# --- GenEval rules on synthetic detections ------------------------------------------------------------

COUNT3 = {
    "tag": "counting",
    "include": [{"class": "dog", "count": 3}],
    "exclude": [{"class": "dog", "count": 4}],
    "prompt": "a photo of three dogs",
}


def test_counting_threshold_is_090_for_counting_and_030_otherwise() -> None:
    dets = [det("dog", 0.95), det("dog", 0.95), det("dog", 0.85), det("dog", 0.25)]
    verdict = evaluate(dets, COUNT3)
    assert not verdict.passed and "dog >= 3, found 2" in verdict.reasons[0]  # the 0.85 one is ignored
    other = {**COUNT3, "tag": "two_object"}  # the same objects under any other task: 0.85 counts, 0.25 never
    assert evaluate(dets, other).passed
    assert not evaluate(dets[:2] + [det("dog", 0.25)], other).passed


def test_exclude_caps_the_count() -> None:
    assert evaluate([det("dog", 0.95)] * 3, COUNT3).passed
    verdict = evaluate([det("dog", 0.95)] * 4, COUNT3)  # "at least 3" holds, "fewer than 4" does not
    assert not verdict.passed and verdict.reasons == ["expected dog < 4, found 4"]
    assert evaluate([det("dog", 0.95)] * 3 + [det("cat", 0.99)], COUNT3).passed  # other classes are free


POSITION = {
    "tag": "position",
    "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
    "prompt": "a photo of a dog left of a teddy bear",
}


def test_position_margin() -> None:
    bear = det("teddy bear", 0.9, square(50))
    # Boxes 0.2 of the image wide: GenEval's margin is 0.1 x (20 + 20) = 4 px, and the shrunk offset over
    # the raw one must exceed 0.5: 0.05 of the image (5 px) to the left fails, 0.15 (15 px) passes.
    assert not evaluate([bear, det("dog", 0.9, square(45))], POSITION).passed
    assert evaluate([bear, det("dog", 0.9, square(35))], POSITION).passed
    assert not evaluate([bear, det("dog", 0.9, square(65))], POSITION).passed  # right of, not left of
    # The margin scales with the boxes (not the image): 60 px wide boxes need more than 2 x 12 px.
    assert not evaluate(
        [det("teddy bear", 0.9, square(50, side=60)), det("dog", 0.9, square(35, side=60))], POSITION
    ).passed
    assert relative_position(square(50, cy=20), square(50, cy=80)) == {"above"}  # image y grows downwards
    assert relative_position(square(50), square(52)) == set()
    missing = evaluate([det("dog", 0.9, square(35))], POSITION)
    assert not missing.passed and any("no target" in r for r in missing.reasons)


COLOR_ATTR = {
    "tag": "color_attr",
    "include": [{"class": "car", "count": 1, "color": "red"}, {"class": "bench", "count": 1, "color": "blue"}],
    "prompt": "a photo of a red car and a blue bench",
}


class FakeColors:
    def __init__(self, answer: str) -> None:
        self.answer, self.calls = answer, []

    def classify(self, image: Image.Image, detections: list[Detection], classname: str) -> list[str]:
        self.calls.append(classname)
        return [self.answer] * len(detections)


def test_color_attribution() -> None:
    car = det("car", 0.8, color="red")
    assert evaluate([car, det("bench", 0.8, color="blue")], COLOR_ATTR).passed
    wrong = evaluate([car, det("bench", 0.8, color="green")], COLOR_ATTR)  # right class, wrong color
    assert not wrong.passed and "blue bench" in wrong.reasons[0]
    # Only the most confident `count` objects are color-checked: a blue bench ranked second does not help.
    assert not evaluate([car, det("bench", 0.9, color="green"), det("bench", 0.5, color="blue")], COLOR_ATTR).passed
    fake = FakeColors("red")  # detections without a color go to the classifier
    single = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
    assert evaluate([det("car", 0.8)], single, IMAGE, fake).passed and fake.calls == ["car"]
    with pytest.raises(ValueError, match="color classifier"):
        evaluate([det("car", 0.8)], single)


# --- GenEval adapter, registry, exclusivity with geneval-shapes ----------------------------------------


@pytest.mark.skipif(not GENEVAL_FILE.is_file(), reason=f"GenEval metadata not found at {GENEVAL_FILE}")
def test_geneval_adapter_reads_the_real_file() -> None:
    prompts = read_geneval(GENEVAL_FILE)
    lines = [json.loads(line) for line in GENEVAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(prompts) == 553 == len(lines)
    assert Counter(p.category for p in prompts) == Counter(obj["tag"] for obj in lines)
    assert [p.prompt for p in prompts] == [obj["prompt"] for obj in lines]
    # Exactly one of geneval / geneval-shapes takes any spec: real COCO specs here, shapes specs there.
    real, shapes = GenEval(), GenEvalShapes()
    assert all(real.applies(p.meta) and not shapes.applies(p.meta) for p in prompts)
    assert all(shapes.applies(s) and not real.applies(s) for s in make_specs(60, seed=0))
    assert not real.applies({}) and not shapes.applies({})  # not a GenEval spec at all: neither
    mixed = {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "dog", "count": 1}]}
    assert real.applies(mixed) and not shapes.applies(mixed)  # a real class needs the real detector
    assert json.loads(prompts[0].as_row("geneval")["meta"]) == prompts[0].meta  # the prompt table's row shape


def test_geneval_adapter_rejects_bad_lines(tmp_path: Path) -> None:
    good = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "tag": "colour"}) + "\n")
    with pytest.raises(ValueError, match=r"evaluation_metadata.jsonl:3: tag 'colour'"):
        read_geneval(path)
    path.write_text(json.dumps(good) + "\n")
    assert [p.category for p in read_geneval(path)] == ["colors"]


def test_registries_and_summary() -> None:
    bench = load_benchmark("geneval")
    assert isinstance(bench, GenEval) and {"geneval", "geneval-shapes"} <= set(BENCHMARKS.names())
    assert set(ADAPTERS.names()) == {"geneval", "t2i-compbench", "dpg-bench", "partiprompts"}
    assert SCORED.names() == ["t2i-compbench"]
    summary = bench.summarize([("counting", True), ("counting", False), ("position", True)])
    assert summary["overall"]["accuracy"] == pytest.approx(0.75)  # mean of task accuracies, not of images
    graded = T2ICompBench().summarize([("color", 0.2), ("color", 0.4), ("spatial", 1.0)], prompts=["a", "a", "b"])
    assert graded["tasks"]["color"]["accuracy"] == pytest.approx(0.3) and graded["tasks"]["color"]["n_prompts"] == 1
    assert graded["overall"]["accuracy"] == pytest.approx(0.65) and graded["probes"] == {}  # every category counts


def test_missing_weights_name_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="OWLv2"):
        GenEval(owlv2=str(tmp_path / "owlv2")).judge(IMAGE, COLOR_ATTR)
    with pytest.raises(FileNotFoundError, match="CLIP"):
        GenEval(detector=FakeDetector([det("car", 0.8)]), clip=str(tmp_path / "clip")).judge(IMAGE, COLOR_ATTR)


# --- tiny random models through save_pretrained / from_pretrained --------------------------------------

TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1)
TINY_VISION = dict(TINY, image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def clip_tok():
    from models.tiny import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, clip_tok) -> dict[str, str]:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    root = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    owl = root / "owlv2"
    Owlv2ForObjectDetection(
        Owlv2Config(text_config=dict(TINY, max_position_embeddings=16), vision_config=TINY_VISION, projection_dim=32)
    ).save_pretrained(owl)
    Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer=clip_tok
    ).save_pretrained(owl)
    clip = root / "clip"
    CLIPModel(CLIPConfig(text_config=TINY, vision_config=TINY_VISION, projection_dim=16)).save_pretrained(clip)
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tok,
    ).save_pretrained(clip)
    # BLIP's tokenizer is BERT WordPiece; a small vocabulary with BLIP's decoder-start token [DEC] will do.
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        "yes",
        "no",
        "?",
        "a",
        "an",
        "green",
        "red",
        "bench",
        "car",
        "and",
    ]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    blip = root / "blip"
    text = dict(
        TINY,
        vocab_size=len(words),
        encoder_hidden_size=32,
        bos_token_id=5,
        pad_token_id=0,
        sep_token_id=3,
        max_position_embeddings=32,
    )
    BlipForQuestionAnswering(
        BlipConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)
    ).save_pretrained(blip)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        blip
    )
    return {"owlv2": str(owl), "clip": str(clip), "blip": str(blip)}


def test_geneval_owlv2_and_clip_end_to_end(tiny_models: dict[str, str]) -> None:
    from models.benchmarks.vision import ClipColorClassifier, ClipEncoder, Owlv2Detector

    bench = GenEval(owlv2=tiny_models["owlv2"], clip=tiny_models["clip"])
    tag, passed = bench.judge(Image.new("RGB", (48, 40), "blue"), COLOR_ATTR)  # content irrelevant: random weights
    assert tag == "color_attr" and isinstance(passed, bool)
    dets = Owlv2Detector(tiny_models["owlv2"], min_score=0.0).detect(IMAGE, ["car", "bench"])
    assert isinstance(dets, list) and dets and all(d.label in ("car", "bench") for d in dets)
    assert all(0 <= d.box[0] <= d.box[2] <= 100 and 0 <= d.box[1] <= d.box[3] <= 100 for d in dets)
    colors = ClipColorClassifier(ClipEncoder(tiny_models["clip"]))
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True
    found = colors.classify(
        IMAGE, [det("car", 0.9, (10, 10, 30, 30)), Detection("car", 0.9, (5, 5, 5, 5), mask)], "car"
    )
    assert len(found) == 2 and set(found) <= set(COLORS)


def test_blip_vqa_yes_probability(tiny_models: dict[str, str]) -> None:
    from models.benchmarks.vision import BlipVqa

    vqa = BlipVqa(tiny_models["blip"])
    p = vqa.vqa_yes_probability(IMAGE, "a green bench?")
    assert 0.0 < p < 1.0
    both = AttributeVqaScorer(vqa)(IMAGE, "a green bench and a red car")
    assert both == pytest.approx(p * vqa.vqa_yes_probability(IMAGE, "a red car?"), rel=1e-5)


# --- T2I-CompBench ------------------------------------------------------------------------------------


def test_t2i_compbench_adapter(tmp_path: Path) -> None:
    (tmp_path / "color_val.txt").write_text("a green bench and a red car\n\na blue backpack and a brown cow\n")
    (tmp_path / "spatial_val.txt").write_text("a bird on the left of a bowl\na woman near a dog  \n")
    (tmp_path / "3d_spatial_val.txt").write_text("a cat in front of a sofa\n")
    (tmp_path / "non_spatial_val.txt").write_text("a man is playing the guitar\n")
    prompts = read_t2i_compbench(tmp_path)
    assert Counter(p.category for p in prompts) == {"color": 2, "spatial": 2, "3d_spatial": 1, "non_spatial": 1}
    assert prompts[0].prompt == "a green bench and a red car" and prompts[3].prompt == "a woman near a dog"
    assert prompts[0].meta == {"benchmark": "t2i-compbench", "category": "color", "prompt": prompts[0].prompt}
    assert len(read_t2i_compbench(tmp_path / "spatial_val.txt")) == 2
    (tmp_path / "colour_val.txt").write_text("x\n")
    with pytest.raises(ValueError, match="colour_val.txt"):
        read_t2i_compbench(tmp_path)


def test_t2i_prompt_parsing() -> None:
    assert noun_phrases("a green bench and a red car.") == ["a green bench", "a red car"]
    assert parse_spatial("A bird on the left of a bowl") == ("bird", "left of", "bowl")
    assert parse_spatial("a dog on the top of a car") == ("dog", "above", "car")
    assert parse_spatial("a woman near a dog") == ("woman", "beside", "dog")
    assert parse_spatial("a man is playing the guitar") is None


class FakeVqa:
    def __init__(self, answers: dict[str, float]) -> None:
        self.answers, self.asked = answers, []

    def vqa_yes_probability(self, image: Image.Image, question: str) -> float:
        self.asked.append(question)
        return self.answers[question]


class FakeDetector:
    def __init__(self, detections: list[Detection]) -> None:
        self.detections, self.queries = detections, []

    def detect(self, image: Image.Image, classes: list[str]) -> list[Detection]:
        self.queries.append(classes)
        return [d for d in self.detections if d.label in classes]


class FakeSimilarity:
    def similarity(self, image: Image.Image, text: str) -> float:
        return 0.25


def test_t2i_scorers_with_fakes() -> None:
    vqa = FakeVqa({"a green bench?": 0.5, "a red car?": 0.8})
    assert AttributeVqaScorer(vqa)(IMAGE, "a green bench and a red car") == pytest.approx(0.4)
    assert vqa.asked == ["a green bench?", "a red car?"]
    assert ClipSimilarityScorer(FakeSimilarity())(IMAGE, "anything") == 0.25
    boxes = FakeDetector([det("bird", 0.9, square(20)), det("bowl", 0.8, square(70)), det("bowl", 0.1, square(5))])
    spatial = SpatialScorer(boxes)
    assert spatial(IMAGE, "a bird on the left of a bowl") == 1.0 and boxes.queries[0] == ["bird", "bowl"]
    assert spatial(IMAGE, "a bowl on the left of a bird") == 0.0
    assert spatial(IMAGE, "a bird next to a bowl") == 1.0  # side by side
    assert spatial(IMAGE, "a bird on the top of a bowl") == 0.0
    assert spatial(IMAGE, "a cat on the left of a bowl") == 0.0  # the 0.1 bowl is below threshold anyway
    with pytest.raises(ValueError, match="no spatial relation"):
        spatial(IMAGE, "a bird and a bowl")
    complex_ = ComplexScorer(lambda im, p: 0.5, lambda im, p: 0.3, spatial)
    assert complex_(IMAGE, "a bird on the left of a bowl") == pytest.approx((0.5 + 0.3 + 1.0) / 3)
    assert complex_(IMAGE, "a bird and a bowl") == pytest.approx(0.4)


def test_t2i_benchmark_dispatch() -> None:
    bench = T2ICompBench(scorers={"color": lambda im, p: 0.6, "non_spatial": lambda im, p: 0.2})
    meta = {"benchmark": "t2i-compbench", "category": "color", "prompt": "a red car"}
    assert bench.applies(meta) and not bench.applies({**meta, "category": "numeracy"})
    assert not bench.applies({"tag": "colors", "include": [{"class": "car", "count": 1}]})
    results = [bench.judge(IMAGE, meta), bench.judge(IMAGE, {**meta, "category": "non_spatial"})]
    assert results == [("color", 0.6), ("non_spatial", 0.2)]
    assert bench.summarize(results)["overall"]["accuracy"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="numeracy"):
        bench.judge(IMAGE, {**meta, "category": "numeracy"})


def test_t2i_compbench_from_the_config_on_tiny_weights(
    tiny_models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate.benchmarks: [t2i-compbench]`: refused at config validation while its weights are absent
    (naming them and the setting), accepted once the settings point at weights, and the evaluate stage's
    run_benchmark scores prompts read by the sample stage's reader with tiny random BLIP/CLIP/OWLv2."""
    from models.benchmarks.geneval import OWLV2_ENV
    from models.benchmarks.t2i_compbench import BLIP_ENV, CLIP_ENV
    from models.validate import load_checked_config
    from synrank.config import ConfigError, PromptSource
    from synrank.shards import png_bytes, write_shard
    from tasks.evaluate import run_benchmark
    from tasks.sample import read_prompt_sources

    for env in (BLIP_ENV, CLIP_ENV, OWLV2_ENV):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError, match=f"'evaluate.benchmarks.0': 't2i-compbench' needs weights .*{BLIP_ENV}"):
        load_checked_config(overrides=["evaluate.benchmarks=[t2i-compbench]"])
    for env, key in ((BLIP_ENV, "blip"), (CLIP_ENV, "clip"), (OWLV2_ENV, "owlv2")):
        monkeypatch.setenv(env, tiny_models[key])
    assert load_checked_config(overrides=["evaluate.benchmarks=[t2i-compbench]"]).evaluate.benchmarks == [
        "t2i-compbench"
    ]

    (tmp_path / "color_val.txt").write_text("a green bench and a red car\na red bench\n")
    (tmp_path / "spatial_train.txt").write_text("a car on the left of a bench\n")
    (tmp_path / "non_spatial_val.txt").write_text("a man is playing the guitar\n")
    rows, _ = read_prompt_sources(
        [
            PromptSource(path=str(tmp_path / f), format="t2i-compbench")
            for f in ("color_val.txt", "spatial_train.txt", "non_spatial_val.txt")
        ]
    )
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(rows))], "meta": [r["meta"] for r in rows]})
    manifest, images = [], {}
    for model, colour in (("base", "white"), ("tuned", "red")):
        for pid in prompts["prompt_id"]:
            for i in range(2):
                images[f"{model}-{pid}-{i}.png"] = Image.new("RGB", (32, 32), colour if i else "green")
                manifest.append(
                    {
                        "model": model,
                        "prompt_id": pid,
                        "index": i,
                        "shard": f"{model}.tar",
                        "member": f"{model}-{pid}-{i}.png",
                    }
                )
        write_shard(f"{model}.tar", [(m, png_bytes(im)) for m, im in images.items() if m.startswith(model)], tmp_path)
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


# --- DPG-Bench ------------------------------------------------------------------------------------------

LONG = (
    "A sprawling medieval market square at dawn, where merchants in patched woolen cloaks arrange baskets of "
    "red apples, golden pears and purple plums beside a weathered stone fountain carved with three leaping "
    "dolphins; behind them a crooked timber inn leans over the cobblestones, its green shutters half open, "
    "while a grey cat sleeps on a barrel, two children chase a runaway goose past a blacksmith hammering a "
    "glowing horseshoe, and thin clouds drift over the distant snowy mountains under a pale pink sky."
)


def test_dpg_adapter(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for item, text in {"item2": "A red cube.\n", "item1": LONG, "item3": "  Two dogs on grass. "}.items():
        (prompts / f"{item}.txt").write_text(text)
    got = read_dpg_bench(prompts)
    assert [p.meta["item_id"] for p in got] == ["item1", "item2", "item3"] and got[2].prompt == "Two dogs on grass."
    assert "questions" not in got[0].meta
    with open(tmp_path / "dpg_bench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "proposition_id", "dependency", "category_broad", "question_natural_language"])
        w.writerows(
            [
                ["item2", "1", "0", "entity", "Is there a cube?"],
                ["item2", "2", "1", "attribute", "Is the cube red?"],
                ["item3", "1", "0", "entity", "Are there dogs?"],
            ]
        )
    got = read_dpg_bench(prompts)  # dpg_bench.csv beside the prompt folder is found
    assert [len(p.meta["questions"]) for p in got] == [0, 2, 1]
    assert got[1].meta["questions"][1]["question_natural_language"] == "Is the cube red?"


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


# --- PartiPrompts ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not PARTI_FILE.is_file(), reason=f"PartiPrompts not found at {PARTI_FILE}")
def test_partiprompts_adapter_reads_the_real_file() -> None:
    prompts = read_partiprompts(PARTI_FILE)
    with open(PARTI_FILE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(prompts) == 1632 == len(rows)
    assert Counter(p.category for p in prompts) == Counter(r["Category"] for r in rows)
    assert Counter(p.meta["challenge"] for p in prompts) == Counter(r["Challenge"] for r in rows)
    assert any('"' in p.prompt for p in prompts)  # quotes kept as text


def test_category_winrates_on_a_hand_made_table() -> None:
    rows = []
    # (prompt, seed index, base score, tuned score): p1 wins both seeds -> 1; p2 ties then loses -> 0.25;
    # p3 wins then loses -> 0.5; p4 has no base image for seed 1, so only seed 0 (a win) counts -> 1.
    for pid, idx, b, t in [
        ("p1", 0, 0.1, 0.2),
        ("p1", 1, 0.3, 0.4),
        ("p2", 0, 0.5, 0.5),
        ("p2", 1, 0.6, 0.1),
        ("p3", 0, 0.0, 1.0),
        ("p3", 1, 1.0, 0.0),
        ("p4", 0, 0.2, 0.3),
        ("p4", 1, None, 0.9),
    ]:
        rows.append({"prompt_id": pid, "index": idx, "model": "tuned", "score": t})
        if b is not None:
            rows.append({"prompt_id": pid, "index": idx, "model": "base", "score": b})
    table = pd.DataFrame(rows)
    cats = {"p1": "Animals", "p2": "Animals", "p3": "Arts", "p4": "Arts"}
    out = category_winrates(table, cats)
    assert list(out) == ["Animals", "Arts"]
    assert out["Animals"]["winrate"] == pytest.approx(0.625) and out["Animals"]["n"] == 2
    assert out["Arts"]["winrate"] == pytest.approx(0.75) and out["Arts"]["n_pairs"] == 3
    lo, hi = mean_ci(np.array([1.0, 0.25]))
    assert (out["Animals"]["ci_low"], out["Animals"]["ci_high"]) == (lo, hi)
    with pytest.raises(ValueError, match="without a category"):
        category_winrates(table, {"p1": "Animals"})
    with pytest.raises(ValueError, match="more than one score"):
        category_winrates(pd.concat([table, table.iloc[:1]]), cats)
