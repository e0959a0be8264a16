"""The Prefect forms a person fills in: a stage deployment shows its own section with choices for every
registry key, the server's own schema check refuses a typo, and a partial parameter keeps the
deployment's other defaults instead of the model's."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.utilities.schema_tools.validation import validate

from cli.deploy import deployment_parameters, form_schema
from synrank.config import Config, TrainConfig, load_config
from synrank.deployment_params import merge_set_fields
from synrank.plugins import PLUGIN_FOLDERS, plugin_names
from synrank.train_config import LaunchConfig


def leaves(schema: dict[str, Any], node: dict[str, Any]) -> int:
    """Input fields a form renders for `node`: one per scalar, the fields of nested objects (through
    $ref), an array of objects counted once by its item's fields."""
    if "$ref" in node:
        return leaves(schema, schema["definitions"][node["$ref"].split("/")[-1]])
    if "allOf" in node:
        return sum(leaves(schema, n) for n in node["allOf"])
    if node.get("type") == "array" and isinstance(node.get("items"), dict) and "$ref" in node["items"]:
        return leaves(schema, node["items"])
    if "properties" in node:
        return sum(leaves(schema, n) for n in node["properties"].values())
    return 1


@pytest.fixture(scope="module")
def train_form() -> dict[str, Any]:
    from flows.train import train_flow

    return form_schema(train_flow.parameters.model_dump(), "train", load_config())


def test_the_train_form_is_its_own_section_with_choices(train_form: dict[str, Any]) -> None:
    cfg = load_config()
    assert list(train_form["properties"]) == ["cfg"] and train_form["required"] == ["cfg"]
    assert train_form["properties"]["cfg"]["title"] == "Training"
    # Every field once, the launch section's inside it: a form a person reads.
    assert leaves(train_form, train_form) == len(TrainConfig.model_fields) - 1 + len(LaunchConfig.model_fields) < 40
    launch = train_form["definitions"]["LaunchConfig"]["properties"]
    assert list(launch) == ["machines", "main_address", "main_port", "config_file"]
    assert all(p.get("description") for p in launch.values())
    train = train_form["definitions"]["TrainConfig"]["properties"]
    assert train["objective"]["enum"] == list(plugin_names("objective"))
    assert train["base"]["enum"] == ["", *(g.name for g in cfg.generate.generators)]
    assert all(p.get("description") for p in train.values())  # every field explains itself


def test_the_server_schema_check_refuses_a_typo_and_takes_the_deployed_defaults(train_form: dict[str, Any]) -> None:
    good = {"cfg": load_config().train.model_dump(mode="json")}
    assert validate(good, train_form) == []
    typo = {"cfg": {**good["cfg"], "objective": "rankdpoo"}}
    errors = validate(typo, train_form)
    assert len(errors) == 1 and "'rankdpoo' is not one of" in errors[0].message


def test_the_pipeline_form_shows_what_a_run_changes_with_choices() -> None:
    from flows.generate import generate_flow
    from flows.pipeline import pipeline_flow
    from flows.score import score_flow

    cfg = load_config()
    form = form_schema(pipeline_flow.parameters.model_dump(), "pipeline", cfg)
    defs, reg = form["definitions"], {k: list(plugin_names(k)) for k in PLUGIN_FOLDERS}
    assert leaves(form, form) == 20  # PIPELINE_FORM's fields, not the hundred of the whole config
    assert list(defs["Config"]["properties"]) == ["sample", "generate", "rank", "train", "evaluate", "tracking"]
    assert list(defs["TrainConfig"]["properties"])[:3] == ["base", "objective", "beta"]
    assert defs["TrainConfig"]["properties"]["objective"]["enum"] == reg["objective"]
    assert defs["EvaluateConfig"]["properties"]["benchmarks"]["items"]["enum"] == reg["benchmark"]
    assert form["properties"]["cfg"]["title"] == "Pipeline config"
    assert (
        "experiment: it writes into a folder named after the flow run in paths.runs"
        in form["properties"]["cfg"]["description"]
    )
    # The hidden settings keep their deployed values and the server accepts them; the pipeline never reads
    # online or study, and a key that is no setting is refused, hidden section or not.
    defaults = deployment_parameters(pipeline_flow, cfg)["cfg"]
    assert set(defaults) == set(Config.model_fields) - {"online", "study", "ingest"}
    assert validate({"cfg": defaults}, form) == []
    assert "'study' does not match" in validate({"cfg": {**defaults, "study": {}}}, form)[0].message
    typo = {**defaults, "generate": {**defaults["generate"], "generatorz": []}}
    assert "'generatorz' does not match" in validate({"cfg": typo}, form)[0].message
    # The generators' and rewards' choices are in the forms that show them.
    gen = form_schema(generate_flow.parameters.model_dump(), "generate", cfg)["definitions"]
    score = form_schema(score_flow.parameters.model_dump(), "score", cfg)["definitions"]
    assert gen["GeneratorSpec"]["properties"]["backend"]["enum"] == reg["generator backend"]
    assert score["RewardSpec"]["properties"]["kind"]["enum"] == reg["reward kind"]


def test_a_partial_parameter_changes_only_the_fields_it_names() -> None:
    deployed = load_config().model_dump(mode="json")
    partial = TrainConfig.model_validate({"steps": 5})  # what Prefect builds from cfg={"steps": 5}
    merged = TrainConfig.model_validate(merge_set_fields(partial, deployed["train"]))
    assert merged.steps == 5 and merged.model_dump(exclude={"steps"}) == TrainConfig.model_validate(
        deployed["train"]
    ).model_dump(exclude={"steps"})
    assert merged.base == "shapes-sd-s" != TrainConfig().base  # the model's own default would be ''
    # Nested: a pipeline run given {"train": {"beta": 5.0}} keeps every other section and train field.
    given = Config.model_validate({"train": {"beta": 5.0}})
    nested = Config.model_validate(merge_set_fields(given, deployed))
    assert nested.train.beta == 5.0 and nested.train.steps == deployed["train"]["steps"]
    assert nested.evaluate.model_dump(mode="json") == deployed["evaluate"]
    assert nested.generate.model_dump(mode="json") == deployed["generate"]  # the generators kept


@pytest.mark.parametrize(
    "stage, partial",
    [("generate", {"batch_size": 2}), ("score", {"batch_size": 2}), ("pipeline", {"train": {"steps": 5}})],
)
def test_the_server_takes_a_partial_parameter_of_every_deployment(stage: str, partial: dict[str, Any]) -> None:
    """Prefect's server checks a run's parameters against the deployment's schema before the flow merges in
    the deployment's defaults: sections whose lists are required (generators, rewards) must not make a
    partial parameter fail there."""
    import importlib

    flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
    form = form_schema(flow.parameters.model_dump(), stage, load_config())
    assert validate({"cfg": partial}, form) == []
