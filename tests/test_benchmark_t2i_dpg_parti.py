"""The benchmarks scored by their own graded scorers or by reward models: T2I-CompBench (adapter, prompt
parsing, scorers with fakes, dispatch), DPG-Bench (adapter with its questions) and PartiPrompts (adapter
on the real file, per-category win-rates)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.benchmarks.dpg_bench import DPGBench, dpg_score, read_dpg_bench
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
from models.stats import mean_ci
from synrank.config import ROOT
from tests.fixtures.benchmarks import IMAGE, LONG, FakeDetector, det, square

PARTI_FILE = ROOT.parent / "shared" / "benchmarks" / "partiprompts" / "PartiPrompts.tsv"


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
    assert bench.applies(meta) and bench.applies({**meta, "category": "numeracy"})  # every category has a scorer
    assert not bench.applies({**meta, "category": "nope"})
    assert not bench.applies({"tag": "colors", "include": [{"class": "car", "count": 1}]})
    results = [bench.judge(IMAGE, meta), bench.judge(IMAGE, {**meta, "category": "non_spatial"})]
    assert results == [("color", 0.6), ("non_spatial", 0.2)]
    assert bench.summarize(results)["overall"]["accuracy"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'nope' has no default scorer"):
        bench.judge(IMAGE, {**meta, "category": "nope"})


# --- DPG-Bench ------------------------------------------------------------------------------------------


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


DPG_QUESTIONS = [  # a parent (1) with two children (2; 3 needs 1 and 2) and an independent one (4)
    {"proposition_id": "1", "dependency": "0", "question_natural_language": "Is there a cube?"},
    {"proposition_id": "2", "dependency": "1", "question_natural_language": "Is the cube red?"},
    {"proposition_id": "3", "dependency": "1,2", "question_natural_language": "Is the red cube on grass?"},
    {"proposition_id": "4", "dependency": "0", "question_natural_language": "Is it daytime?"},
]


def test_dpg_score_zeroes_a_question_whose_parent_is_no() -> None:
    assert dpg_score(DPG_QUESTIONS, [True, True, True, True]) == 1.0
    assert dpg_score(DPG_QUESTIONS, [False, True, True, True]) == 0.25  # 2 and 3 fall with 1; 4 stands
    assert dpg_score(DPG_QUESTIONS, [True, False, True, True]) == 0.5  # 3 falls with 2


def test_dpg_bench_asks_each_question_and_applies_only_with_questions() -> None:
    class Vqa:
        def vqa_yes_probability(self, image: Image.Image, question: str) -> float:
            return {"Is there a cube?": 0.9, "Is the cube red?": 0.2}.get(question, 0.7)

    bench = DPGBench(vqa=Vqa())
    meta = {"benchmark": "dpg-bench", "item_id": "7", "prompt": "A red cube on grass.", "questions": DPG_QUESTIONS}
    assert bench.applies(meta) and not bench.applies({**meta, "questions": []})
    assert bench.judge(IMAGE, meta) == ("dpg-bench", 0.5)  # 1 yes, 2 no, 3 zeroed by 2, 4 yes
    assert bench.weights()[0].path == "Salesforce/blip-vqa-base"
