"""The tuned generator as an MLflow model: a pyfunc that wraps the diffusers pipeline, so the model
registry, the runs table's Models column and `mlflow.pyfunc.load_model` all see one model.

    model = mlflow.pyfunc.load_model("models:/synrank-shapes-sd-s/3")
    out = model.predict(pd.DataFrame({"prompt": ["a photo of two red circles"], "seed": [0]}))
    Image.open(io.BytesIO(out["image"][0]))

Input: a DataFrame with `prompt` (str) and `seed` (int); output: the same rows with `image`, PNG bytes
(image i is rendered from seed i alone, as the generate stage does). The logged artifact is the train
stage's output folder (LoRA weights or a full pipeline, and tuned.json); the base weights it names are
loaded from where tuned.json says (a local folder or a hub id), so a LoRA model loads where its base
is, and synrank's generator code renders it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

import mlflow
from synrank.shards import png_bytes

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed")]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("binary", "image")]),
)


class TunedGenerator(mlflow.pyfunc.PythonModel):
    """prompts and seeds in, PNG images out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from models.generators import load_generator
        from models.trainer import tuned_spec

        _, tuned = tuned_spec(Path(context.artifacts["tuned"]))
        self.generator = load_generator(tuned, "cpu")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        prompts, seeds = [str(p) for p in model_input["prompt"]], [int(s) for s in model_input["seed"]]
        images = self.generator.render(prompts, seeds).images
        return pd.DataFrame({"prompt": prompts, "seed": seeds, "image": [png_bytes(im) for im in images]})


def log_tuned_model(model_dir: Path, registered_name: str, tags: dict[str, str]) -> tuple[str, str]:
    """Log `model_dir` (a train stage output) as the active run's MLflow model `tuned_model` and register
    it as a new version of `registered_name` with `tags`; returns (model URI, version)."""
    info = mlflow.pyfunc.log_model(
        name="tuned_model",
        python_model=TunedGenerator(),
        artifacts={"tuned": str(model_dir)},
        signature=SIGNATURE,
        registered_model_name=registered_name,
        pip_requirements=["torch", "diffusers", "transformers", "peft", "pandas", "pillow"],
    )  # no inference: offline
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, v)
    return info.model_uri, version
