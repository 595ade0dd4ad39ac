"""Evaluation protocols: which prompt wording, renderer and parser a run uses.

``paper`` reproduces the MedVision v1 code (arXiv 2511.18676 v1) exactly, quirks included.
``corrected`` fixes what the later official versions and issue #20 fixed. Every result
records the protocol it ran under, and the protocol is part of each task's fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Protocol(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    # Rendering: per-slice min-max (v1) or CT windows by anatomy group + percentiles elsewhere.
    render: Literal["minmax", "window"]
    # Parsing: v1 last-k regex over the whole text, or the strict parser inside <answer> tags.
    parser: Literal["lastk", "strict"]
    # Prompt additions of later versions.
    state_image_size: bool
    answer_tags: bool
    # Perceived size stated to the model: the v1 per-model rule, or the fixed (issue #20) one.
    perceived: Literal["v1", "fixed"]
    # Drop angle samples whose ground truth is below this (degrees); None keeps all (v1).
    near_zero_angle: float | None
    # Flag boxes outside [0, 1] or with inverted corners as malformed (corrected only).
    strict_boxes: bool
    # Score T/L and A/D against the plan's full-precision values instead of the float16 values
    # the official dataset stores (and v1 scored against).
    full_precision_targets: bool = False


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        name="paper",
        render="minmax",
        parser="lastk",
        state_image_size=False,
        answer_tags=False,
        perceived="v1",
        near_zero_angle=None,
        strict_boxes=False,
    ),
    "corrected": Protocol(
        name="corrected",
        render="window",
        parser="strict",
        state_image_size=True,
        answer_tags=True,
        perceived="fixed",
        near_zero_angle=0.1,
        strict_boxes=True,
        full_precision_targets=True,
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        known = ", ".join(sorted(PROTOCOLS))
        raise ValueError(f"unknown protocol {name!r}; known protocols: {known}") from None
