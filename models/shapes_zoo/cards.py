"""MODEL_CARD.md files and the printed table of a zoo build."""

from __future__ import annotations

import json
from pathlib import Path

from models.shapes import TASKS


def _ci(s: dict, key: str = "accuracy") -> str:
    lo, hi = s["ci95"]
    return f"{s[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def generator_card(entry: dict) -> str:
    """MODEL_CARD.md text of one zoo generator from its zoo.json entry: architecture, training, and its
    GenEval-shapes accuracy (arXiv 2310.11513's rules on the shapes world) per task with 95% CIs. KeyError
    when the entry lacks a field the card names."""
    g, s = entry["config"], entry["geneval"]
    rows = "\n".join(f"| {t} | {_ci(s['tasks'][t])} | {s['tasks'][t]['n']} |" for t in TASKS if t in s["tasks"])
    return f"""# {entry["name"]} (shapes-world zoo generator)

A StableDiffusionPipeline trained from scratch on the shapes world (32x32 px, fp16 weights).
Load: `DiffusionPipeline.from_pretrained(folder, dtype=torch.float32)`, or in params.yaml
`{{name: {entry["name"]}, path: <zoo>/{entry["name"]}, steps: {entry["sample_steps"]}, guidance: {entry["guidance"]}, height: 32, width: 32}}`.

## Model
- UNet2DConditionModel: block_out_channels {tuple(g["unet_channels"])}, layers_per_block {g["layers_per_block"]}, cross-attention at every level; {entry["params"]["unet"]:,} parameters
- CLIPTextModel: hidden {g["text_hidden"]}, {g["text_layers"]} layers, CLIP's BPE restricted to the shapes words; {entry["params"]["text_encoder"]:,} parameters
- AutoencoderKL (shared by the zoo): 32x32x3 -> 4x8x8; {entry["params"]["vae"]:,} parameters; reconstruction passes the verifier on {entry["vae"]["recon_verify"]:.3f} of eval renders
- Scheduler: DDIM, SD scaled_linear betas; size on disk {_mb(entry["bytes"])}

## Training
- Data: {g["pool_size"]:,} train-split renders (stream seed {entry["data_seed"]}); held-out color combinations never drawn
- EMA snapshot at step {entry["snapshot_step"]} of run `{entry["run"]}` ({g["steps"]} steps), batch {g["batch_size"]}, AdamW lr {g["lr"]} (warmup + cosine), seed {g["seed"]}
- epsilon prediction, Min-SNR-{g["min_snr_gamma"]} weights, caption dropout {g["caption_dropout"]}, EMA {g["ema_decay"]} (saved)
- Wall time: training {entry["train_s"]:.0f} s (the run's time up to the snapshot), evaluation {entry["eval_s"]:.0f} s

## GenEval-shapes (eval split, {entry["eval"]["n_per_task"]} prompts/task x {entry["eval"]["images_per_prompt"]} images, {entry["sample_steps"]} steps, guidance {entry["guidance"]})
Overall (mean of tasks): **{_ci(s["overall"])}**

| task | accuracy [95% CI] | n |
|---|---|---|
{rows}
"""


def reward_card(entry: dict) -> str:
    """MODEL_CARD.md text of one zoo reward (an open_clip CLIP) from its zoo.json entry: architecture,
    training, and its agreement with the verifier, rendered pairs per wrong kind (and generated pairs when
    measured), with 95% CIs. KeyError when the entry lacks a field the card names."""
    r, a = entry["config"], entry["agreement"]
    kinds = "\n".join(f"| {k} | {_ci(v, 'agreement')} | {v['n']} |" for k, v in a["per_kind"].items())
    gen = (
        f"- Generated pairs (pass vs fail, same prompt): {_ci(a['generated'], 'agreement')}, n {a['generated']['n']}\n"
        if "generated" in a
        else ""
    )
    return f"""# {entry["name"]} (shapes-world zoo reward)

An open_clip CLIP trained contrastively on rendered scenes; fp16 weights.
Load: `open_clip.create_model_and_transforms("local-dir:<folder>")`, or in params.yaml
`{{name: {entry["name"]}, kind: clipscore, arch: "local-dir:<zoo>/{entry["name"]}"}}`.

## Model
- Vision: ViT width {r["vision_width"]}, {r["vision_layers"]} layers, patch {r["patch_size"]}, image 32
- Text: width {r["text_width"]}, {r["text_layers"]} layers, context 77, vocab 49408; embed_dim {r["embed_dim"]}
- {entry["params"]:,} parameters; size on disk {_mb(entry["bytes"])}

## Training
- Data: {entry["pool_size"]:,} train-split renders (stream seed {entry["data_seed"]}) with hard negatives of kinds {", ".join(r["kinds"])}
- Loss: symmetric InfoNCE over scenes and their wrong renders + per-scene hard-negative softmax (weight {r["hard_weight"]})
- {r["steps"]} steps, {r["batch_size"]} scenes per step, AdamW lr {r["lr"]}, seed {r["seed"]}
- Wall time: training {entry["train_s"]:.0f} s

## Agreement with the verifier
- Rendered (correct vs wrong render, eval split): **{_ci(a["rendered"], "agreement")}**, n {a["rendered"]["n"]}
{gen}
| wrong kind | agreement [95% CI] | n |
|---|---|---|
{kinds}
"""


def write_card(folder: Path, text: str) -> None:
    """Write `text` as `folder`/MODEL_CARD.md."""
    (Path(folder) / "MODEL_CARD.md").write_text(text)


def table(summary: dict) -> str:
    """The printed table of a zoo build (zoo.json's summary): per generator its GenEval-shapes overall [95% CI],
    size in MB, training seconds and per-task accuracy; per reward its agreement with the verifier."""
    lines = [f"{'model':<22}{'score':>8}  {'95% CI':<16}{'size':>9}{'train s':>9}   per task"]
    for e in summary["generators"]:
        s = e["geneval"]
        per = " ".join(f"{t[:6]}={s['tasks'][t]['accuracy']:.2f}" for t in TASKS if t in s["tasks"])
        lo, hi = s["overall"]["ci95"]
        lines.append(
            f"{e['name']:<22}{s['overall']['accuracy']:>8.3f}  [{lo:.3f}, {hi:.3f}] {_mb(e['bytes']):>9}"
            f"{e['train_s']:>9.0f}   {per}"
        )
    for e in summary["rewards"]:
        a = e["agreement"]
        lo, hi = a["rendered"]["ci95"]
        gen = f"generated={a['generated']['agreement']:.3f}" if "generated" in a else ""
        per = " ".join(f"{k}={v['agreement']:.2f}" for k, v in a["per_kind"].items())
        size = _mb(e["bytes"]) if e.get("bytes") else "-"
        lines.append(
            f"{e['name']:<22}{a['rendered']['agreement']:>8.3f}  [{lo:.3f}, {hi:.3f}] {size:>9}"
            f"{e.get('train_s', 0):>9.0f}   {per} {gen}"
        )
    lines.append(f"total size {_mb(summary['bytes'])}, wall time {summary['wall_s']:.0f} s")
    return "\n".join(lines)


def write_summary(out_dir: Path, summary: dict) -> None:
    """Write `summary` as `out_dir`/zoo.json (indented, sorted keys)."""
    (Path(out_dir) / "zoo.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
