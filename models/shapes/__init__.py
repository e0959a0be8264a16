"""The shapes world: a CPU-scale text-to-image world whose GenEval-style benchmark is scored exactly."""

from .benchmark import format_table, geneval_accuracy
from .render import WRONG_KINDS, render, render_wrong
from .specs import COLORS, PALETTE, RELATIONS, RESERVED, SHAPES, TASKS, make_specs, prompt_for, sample_spec
from .verify import Detection, detect, verify, verify_report

__all__ = [
    "COLORS",
    "PALETTE",
    "RESERVED",
    "SHAPES",
    "TASKS",
    "RELATIONS",
    "WRONG_KINDS",
    "Detection",
    "detect",
    "format_table",
    "make_specs",
    "prompt_for",
    "sample_spec",
    "render",
    "render_wrong",
    "geneval_accuracy",
    "verify",
    "verify_report",
]
