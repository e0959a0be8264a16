"""The base of every params.yaml section (synrank.config_sections, synrank.train_config)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

CODE_ROOT = Path(__file__).resolve().parent.parent  # synrank's own checkout: the code that runs
FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"


def _file_name(value: str) -> str:
    if not re.fullmatch(FILE_NAME, value):
        raise ValueError(
            "a name becomes a file name: one path segment of letters, digits, '.', '_' and '-', not starting "
            "with '.', at most 64 characters"
        )
    return value


# A name that becomes a folder or file name (shards/<generator>/, scores/cache/<reward>/). '../x', 'a/b' and a
# 241-character name are config errors where they are written, not a stage that writes outside its folder
# or fails half-way with "File name too long". The pattern is in the JSON schema too: the Prefect form checks it.
FileName = Annotated[str, AfterValidator(_file_name), WithJsonSchema({"type": "string", "pattern": FILE_NAME})]


class Strict(BaseModel):
    """Base of every section: an unknown key or a badly typed assignment is a validation error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
