"""Prompt wording of the three task families, and the pixel-size statement.

The ``V1_*`` strings are the exact wording of MedVision v1
(``lmms_eval/tasks/medvision/medvision_utils.py`` at commit c221615: ``FORMAT_PROMPT_*``,
``doc_to_text_BoxCoordinate``, ``doc_to_text_TumorLesionSize``,
``_get_biometric_prompt_angle`` / ``_get_biometric_prompt_distance``,
``doc_to_text_BiometricsFromLandmarks``). The ``LATER_*`` strings are the format block of the
later official versions (``GENERAL_FORMAT_PROMPT`` + the shortened format sentences), used by
the ``corrected`` protocol together with the image-size sentence.

Everything here is a pure function of its arguments; the tasks fill in sample fields.
"""

from __future__ import annotations

from ..protocol import ANSWER_TAG_INSTRUCTION, FORMAT_HEAD, IMAGE_SIZE, PIXEL_SIZE, Protocol, stated_pixel_size
from ..schema import PerceivedGeometry

__all__ = ["ANSWER_TAG_INSTRUCTION", "FORMAT_HEAD", "IMAGE_SIZE", "PIXEL_SIZE", "format_block", "size_statement",
           "stated_pixel_size"]

# -- v1 format requirements (exact) ---------------------------------------------------------
V1_FORMAT_BOX = (
    "The answer should be four decimal numbers separated by commas without any units or additional text. "
    "The first two numbers are the coordinates of the lower-left corner and the last two numbers are the "
    "coordinates of the upper-right corner of the bounding box. "
    "Use relative coordinates in the image space, where the origin is at the lower-left corner of the image. "
    "Relative coordinates should be values between 0 and 1, representing the relative positions in the image."
)
V1_FORMAT_TL = (
    "The answer should be two decimal numbers separated by a comma without any units or additional text. "
    "The first is the major axis length, and the second is the minor axis length."
)
V1_FORMAT_AD = "The answer should be a single decimal number without any units or additional text."

# -- later official versions: answer tags + shortened format sentences ----------------------
LATER_FORMAT_BOX = ANSWER_TAG_INSTRUCTION + V1_FORMAT_BOX
LATER_FORMAT_TL = (
    ANSWER_TAG_INSTRUCTION + "The answer should be two decimal numbers separated by a comma. "
    "The first is the major axis length, and the second is the minor axis length."
)
LATER_FORMAT_AD = ANSWER_TAG_INSTRUCTION + "The answer should be a single decimal number."

# -- task sentences (v1 wording; identical under both protocols) ----------------------------
DETECTION_TASK = (
    "Task:\nGiven the input medical image: {image_description}, return the coordinates of the lower-left "
    "and upper-right corner of the bounding box for the {label_name}.\n"
)
TL_TASK = (
    "Task:\nGiven the input medical image: {image_description}, estimate the major and minor axis lengths "
    "of the ellipse enclosing the {label_name}, in {unit}.\n"
)
AD_TASK_HEAD = "Task:\nGiven the input medical image: {image_description}, "
ANGLE_NAMED = (
    "estimate the angle of {name} in {unit}, which is the angle between 2 lines: "
    "(line 1) the line connecting {p1} and {p2}, (line 2) the line connecting {p3} and {p4}.\n"
)
ANGLE_UNNAMED = (
    "estimate the angle between 2 lines in {unit}: "
    "(line 1) the line connecting {p1} and {p2}, (line 2) the line connecting {p3} and {p4}.\n"
)
DISTANCE_NAMED = (
    "estimate the distance of {name} in {unit}, which is the distance between 2 landmark points: "
    "(landmark 1) {p1}, (landmark 2) {p2}.\n"
)
DISTANCE_UNNAMED = (
    "estimate the distance between 2 landmark points in {unit}: (landmark 1) {p1}, (landmark 2) {p2}.\n"
)
ADDITIONAL_INFO = "Additional information:\n"

ALL_TEMPLATES: dict[str, str] = {
    name: value for name, value in globals().items() if name.isupper() and isinstance(value, str)
}


def format_block(protocol: Protocol, v1_text: str, later_text: str) -> str:
    """Kept for plugins written against 0.1: ``protocol.format_block(v1_text, later_text)``."""
    return protocol.format_block(v1_text, later_text)


def size_statement(protocol: Protocol, spacing: tuple[float, float], geometry: PerceivedGeometry, unit: str) -> str:
    """Kept for plugins written against 0.1: ``protocol.size_statement(spacing, geometry, unit)``."""
    return protocol.size_statement(spacing, geometry, unit)
