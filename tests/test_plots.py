"""The stages' plots (synrank.plots): deterministic SVG with labelled axes, and a `dvc plots show` page (real
dvc) that holds no script and whose images load in Chromium with every network request refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from synrank.plots import benchmark_tasks_svg, training_curve_svg

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

CURVE = pd.DataFrame({"step": [1, 2, 3], "loss": [0.7, 0.6, 0.5], "implicit_acc": [0.5, 0.6, 0.75]})
TASKS = pd.DataFrame(
    [
        {"benchmark": "geneval", "model": m, "task": t, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1}
        for m, shift in (("sd-s", 0.0), ("sd-s-tuned", 0.1))
        for t, a in (("counting", 0.3 + shift), ("colors", 0.5 + shift), ("overall", 0.4 + shift))
    ]
)


def _plots(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return (
        training_curve_svg(CURVE, folder / "train_curve.svg"),
        benchmark_tasks_svg(TASKS, "sd-s", "sd-s-tuned", folder / "benchmark_tasks.svg"),
    )


def test_plots_are_the_same_bytes_every_time_and_name_their_axes(tmp_path: Path) -> None:
    first, second = _plots(tmp_path / "a"), _plots(tmp_path / "b")
    for one, two in zip(first, second):
        assert one.read_bytes() == two.read_bytes()  # a resumed run reproduces its folder's content id
    curve, tasks = (p.read_text() for p in first)
    # Text is drawn as paths; matplotlib keeps each label's text in a comment.
    for label in (
        "optimizer step",
        "training loss",
        "implicit accuracy",
        "implicit accuracy (share of pairs ranked right)",
    ):
        assert f"<!-- {label} -->" in curve
    for label in ("accuracy (95% CI)", "base: sd-s", "tuned: sd-s-tuned", "counting", "overall", "geneval"):
        assert f"<!-- {label} -->" in tasks
    assert "<dc:date>" not in curve + tasks


def _playwright_missing() -> str:
    from tests.test_browser import _playwright_missing as missing

    return missing()


def test_dvc_plots_show_opens_with_the_network_off(tmp_path: Path) -> None:
    _plots(tmp_path / "outputs")
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("plots:\n  - outputs/train_curve.svg\n  - outputs/benchmark_tasks.svg\n")
    subprocess.run([dvc, "plots", "show", "-o", "page"], cwd=tmp_path, check=True, capture_output=True)
    page = (tmp_path / "page" / "index.html").read_text()
    assert "<script" not in page and page.count("<img") == 2
    if _playwright_missing():
        pytest.skip(_playwright_missing())
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM

    refused: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page_ = browser.new_page()
        page_.route("http*://**", lambda route: (refused.append(route.request.url), route.abort()))
        page_.goto((tmp_path / "page" / "index.html").as_uri(), wait_until="load")
        widths = page_.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        browser.close()
    assert len(widths) == 2 and all(w > 0 for w in widths) and refused == []
