"""GenEval: its rules on hand-made detections (thresholds, exclude caps, position margin, colors), its
prompt adapter on the real file and on bad lines, the benchmark registries and summaries, and the
weights a detector-based benchmark names when they are missing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from models.benchmarks import BENCHMARKS, load_benchmark
from models.benchmarks.geneval import GenEval, GenEvalOwlv2, evaluate, read_geneval, relative_position
from models.benchmarks.geneval_shapes import GenEvalShapes
from models.benchmarks.registries import SCORED
from models.benchmarks.t2i_compbench import T2ICompBench
from models.shapes import make_specs
from models.shapes.verify import Detection
from synrank.config import ROOT
from tests.fixtures.benchmarks import COLOR_ATTR, IMAGE, FakeDetector, det, square

GENEVAL_FILE = ROOT.parent / "shared" / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"


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
    assert SCORED.names() == ["dpg-bench", "t2i-compbench"]
    summary = bench.summarize([("counting", True), ("counting", False), ("position", True)])
    assert summary["overall"]["accuracy"] == pytest.approx(0.75)  # mean of task accuracies, not of images
    graded = T2ICompBench().summarize([("color", 0.2), ("color", 0.4), ("spatial", 1.0)], prompts=["a", "a", "b"])
    assert graded["tasks"]["color"]["accuracy"] == pytest.approx(0.3) and graded["tasks"]["color"]["n_prompts"] == 1
    assert graded["overall"]["accuracy"] == pytest.approx(0.65) and graded["probes"] == {}  # every category counts


def test_missing_weights_name_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="OWLv2"):
        GenEvalOwlv2(owlv2=str(tmp_path / "owlv2")).judge(IMAGE, COLOR_ATTR)
    with pytest.raises(FileNotFoundError, match="CLIP"):
        GenEval(detector=FakeDetector([det("car", 0.8)]), clip=str(tmp_path / "clip")).judge(IMAGE, COLOR_ATTR)
