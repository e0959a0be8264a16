"""The sample stage and the benchmark adapters read T2I-CompBench and DPG-Bench prompt sources with the
same reader (synrank.prompt_formats): categories and meta come out exactly as the adapters give them,
DPG-Bench ids are in numeric order, and a folder given in a one-file format fails with a clear message
instead of IsADirectoryError."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from models.benchmarks.dpg_bench import read_dpg_bench
from models.benchmarks.t2i_compbench import read_t2i_compbench
from synrank.config import PromptSource, SampleConfig
from synrank.prompt_formats import t2i_category_of
from synrank.prompts import read_sources


def _rows(sources: list[PromptSource], root: Path) -> list[tuple[str, str | None]]:
    return [(r["prompt"], r["category"]) for r in read_sources(sources, root=root).rows]


def test_t2i_compbench_val_and_train_files(tmp_path: Path) -> None:
    # The real files: one prompt a line, LF endings, a trailing newline; names <category>_{val,train}[_variant].txt.
    (tmp_path / "color_val.txt").write_text("a green bench and a red car\na blue backpack and a brown cow\n")
    (tmp_path / "spatial_train.txt").write_text("a bird on the left of a bowl\n\na woman near a dog \n")
    (tmp_path / "complex_val_spatial.txt").write_text("The black chair is next to the white table.\n")
    sources = [
        PromptSource(path="color_val.txt", format="t2i-compbench"),
        PromptSource(path="spatial_train.txt", format="t2i-compbench"),
        PromptSource(path=str(tmp_path / "complex_val_spatial.txt"), format="t2i-compbench"),
    ]
    result = read_sources(sources, root=tmp_path)
    assert [(r["prompt"], r["category"]) for r in result.rows] == [
        ("a green bench and a red car", "color"),
        ("a blue backpack and a brown cow", "color"),
        ("a bird on the left of a bowl", "spatial"),
        ("a woman near a dog", "spatial"),
        ("The black chair is next to the white table.", "complex"),
    ]
    assert json.loads(result.rows[3]["meta"]) == {
        "benchmark": "t2i-compbench",
        "category": "spatial",
        "prompt": "a woman near a dog",
    }
    assert result.report["sources"]["spatial_train.txt"]["format"] == "t2i-compbench"
    assert (result.report["good"], result.report["empty"]) == (5, 1)
    # The adapter reads the same file to the same prompts and meta.
    adapted = read_t2i_compbench(tmp_path / "spatial_train.txt")
    assert [(p.prompt, p.category, json.dumps(p.meta, ensure_ascii=False)) for p in adapted] == [
        (r["prompt"], r["category"], r["meta"]) for r in result.rows[2:4]
    ]


def test_t2i_compbench_file_names() -> None:
    assert [
        t2i_category_of(Path(n))
        for n in ("non_spatial_val.txt", "3d_spatial_train.txt", "spatial_val.txt", "complex_val_spatialaction.txt")
    ] == ["non_spatial", "3d_spatial", "spatial", "complex"]
    with pytest.raises(ValueError, match="colour_val.txt"):
        t2i_category_of(Path("colour_val.txt"))


def test_t2i_compbench_folder_reads_the_val_files_in_category_order(tmp_path: Path) -> None:
    (tmp_path / "spatial_val.txt").write_text("a bird on the left of a bowl\n")
    (tmp_path / "color_val.txt").write_text("a green bench and a red car\n")
    (tmp_path / "color_train.txt").write_text("a pink cat\n")  # training prompts are not the benchmark
    (tmp_path / "complex_val_spatial.txt").write_text("The black chair is next to the white table.\n")
    assert _rows([PromptSource(path=str(tmp_path), format="t2i-compbench")], tmp_path) == [
        ("a green bench and a red car", "color"),
        ("a bird on the left of a bowl", "spatial"),
    ]


def test_t2i_compbench_bad_file_name_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a red car\n")
    with pytest.raises(ValueError, match=r"prompts\.txt': not a T2I-CompBench prompt file"):
        read_sources([PromptSource(path="prompts.txt", format="t2i-compbench")], root=tmp_path)


def test_dpg_bench_folder_in_numeric_id_order(tmp_path: Path) -> None:
    folder = tmp_path / "dpg"
    folder.mkdir()
    for item, text in {
        "10": "A tall lighthouse on a cliff at dusk.\n",
        "1": "A red cube.\n",
        "2": "  Two dogs on grass. ",
    }.items():
        (folder / f"{item}.txt").write_text(text)
    result = read_sources([PromptSource(path="dpg", format="dpg-bench", split="eval")], root=tmp_path)
    assert [(r["prompt"], r["category"]) for r in result.rows] == [
        ("A red cube.", "dpg-bench"),
        ("Two dogs on grass.", "dpg-bench"),
        ("A tall lighthouse on a cliff at dusk.", "dpg-bench"),
    ]
    assert [json.loads(r["meta"])["item_id"] for r in result.rows] == ["1", "2", "10"]
    assert {r["split"] for r in result.rows} == {"eval"}
    adapted = read_dpg_bench(folder)
    assert [(p.prompt, p.category, json.dumps(p.meta, ensure_ascii=False)) for p in adapted] == [
        (r["prompt"], r["category"], r["meta"]) for r in result.rows
    ]


def test_folder_in_a_one_file_format_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "dpg"
    folder.mkdir()
    (folder / "1.txt").write_text("A red cube.\n")
    with pytest.raises(ValueError) as err:
        read_sources([PromptSource(path="dpg", format="text")], root=tmp_path)
    assert str(err.value) == (
        f"'{folder}' is a folder, but format 'text' reads one file; "
        "the formats that read a folder are t2i-compbench, dpg-bench"
    )
    with pytest.raises(ValueError, match=re.escape(f"'{folder}' is a folder, but format 'auto'")):
        read_sources([PromptSource(path="dpg", format="auto")], root=tmp_path)


def test_dpg_bench_empty_folder_names_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no DPG-Bench prompt files"):
        read_sources([PromptSource(path="empty", format="dpg-bench")], root=tmp_path)


def test_config_accepts_benchmark_formats() -> None:
    cfg = SampleConfig.model_validate(
        {
            "sources": [
                {"path": "bench/color_val.txt", "format": "t2i-compbench", "split": "eval"},
                {"path": "bench/dpg", "format": "dpg-bench"},
            ]
        }
    )
    assert [s.format for s in cfg.sources] == ["t2i-compbench", "dpg-bench"]
    with pytest.raises(ValueError, match="t2i-compbench"):
        PromptSource.model_validate({"path": "x.txt", "format": "t2i_compbench"})
