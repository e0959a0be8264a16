"""The base of every params.yaml section (synrank.config_sections, synrank.train_config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every section: an unknown key or a badly typed assignment is a validation error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
