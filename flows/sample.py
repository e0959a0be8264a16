"""The sample stage: prompt corpora -> `prompts.parquet` with a seeded train/eval split."""

from __future__ import annotations

from prefect import flow

from synrank.config import Paths, SampleConfig, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.prompts import SKIP_REASONS, split
from synrank.stage import finished, stage_run
from synrank.stamp import sample_identity
from tasks.sample import read_prompt_sources, write_prompt_table


@flow(name="sample")
def sample_flow(
    cfg: SampleConfig = SampleConfig(), paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()
) -> str:
    """Sample stage: read the prompt corpora of `cfg.sources` and write `paths.prompts`/prompts.parquet
    (prompt_id, prompt, split, category, source, meta), split train/eval by a seeded hash of each prompt
    (`cfg.eval_fraction`, `cfg.seed`); logs the prompt counts and the skipped lines per reason.

    Skipped when the folder's stamp (synrank.stage) matches this config, the source files' content and the
    code, and the folder is as the stamp recorded it. Raises ValueError when no usable prompt is left,
    runlock.LockHeld when another run holds the folder. Returns the output folder."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("sample", cfg, paths)
    out = paths.resolve("prompts")
    with stage_run("sample", **sample_identity(cfg, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        rows, report = read_prompt_sources(cfg.sources, cfg.max_prompt_chars)
        if not rows:
            raise ValueError(f"no usable prompts in {[s.path for s in cfg.sources]}: {report}")
        splits = split(rows, cfg.eval_fraction, cfg.seed)
        write_prompt_table(rows, splits, str(out))
        n_eval = splits.count("eval")
        skipped = {k: report[k] for k in SKIP_REASONS}
        st.log(
            n_prompts=len(rows),
            n_train=len(rows) - n_eval,
            n_eval=n_eval,
            skipped=sum(skipped.values()),
            **{f"skipped_{k}": v for k, v in skipped.items()},
        )  # every reason, zeros too
        st.report = report
        print(
            f"[sample] {len(rows)} prompts ({len(rows) - n_eval} train, {n_eval} eval) from "
            f"{len(cfg.sources)} source(s); skipped lines: "
            + ", ".join(f"{k}={v}" for k, v in skipped.items())
            + (f"; {report['also_in_train']} eval prompts also in train" if report["also_in_train"] else "")
        )
    return str(out)
