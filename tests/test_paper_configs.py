"""configs/paper/: the paper's setup, checked offline by `synrank validate`, which lists every model to fetch."""

from __future__ import annotations

import pytest

import cli.main
from synrank.config import CODE_ROOT, load_config

PAPER = CODE_ROOT / "configs" / "paper"


@pytest.mark.parametrize("name, base", [("syn-pic-sdxl", "sdxl"), ("syn-pic-sd3m", "sd3-medium")])
def test_a_paper_config_validates_offline_and_lists_its_weights(
    name: str, base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = PAPER / f"{name}.yaml"
    assert cli.main.main(["validate", "--params", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: valid. The models and files it needs:"
    rows = [line.split()[:4] for line in lines[2:]]
    # The four Syn-Pic generators at their model cards, the five rewards' files, the benchmark scorers.
    assert rows[:4] == [
        ["generator", "sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "generate.generators.0.path"],
        ["generator", "sd3-medium", "stabilityai/stable-diffusion-3-medium-diffusers", "generate.generators.1.path"],
        ["generator", "pixart-sigma", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "generate.generators.2.path"],
        ["generator", "stable-cascade", "stabilityai/stable-cascade", "generate.generators.3.path"],
    ]
    assert ["reward", "imagereward", "(imagereward)", "THUDM/ImageReward"] in rows
    assert any("google/owlv2-base-patch16-ensemble" in line for line in lines)
    pickapic = next(line for line in lines if "data/paper/pickapic_v2_prompts.txt" in line)
    assert pickapic.split()[:3] == ["prompts", "(text,", "train)"] and pickapic.endswith("not on this machine")
    cfg = load_config(path)
    assert (cfg.train.base, cfg.train.objective, cfg.train.processes) == (base, "rankdpo", 8)
    assert (cfg.generate.generators[0].steps, cfg.generate.generators[0].height) == (50, 1024)  # SDXL's card
    assert cfg.generate.group_size() == 4


def test_a_typo_in_a_paper_config_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["validate", "--params", str(PAPER / "syn-pic-sdxl.yaml"), "--set", "train.objective=rankdpoo"]
    assert cli.main.main(argv) == 2
    assert capsys.readouterr().err.startswith(
        "synrank: bad value for 'train.objective': 'rankdpoo' is not a registered objective; allowed:"
    )
