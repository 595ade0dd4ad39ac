"""A complete task family from outside medvision-eval: the area (mm²) of the tumour/lesion ellipse,
pi/4 x major x minor of the official annotation, asked on the same slices as ``tl_size``.

The base class does the rest: messages, answer spec, parsing with the protocol's parser, the
protocol's size statement and answer format, ordering, parse statistics, bootstrap intervals.
"""

import math

from medvision_eval.tasks.base import Task
from medvision_eval.tasks.common import measurement_scores

PROMPT = ("Task:\nGiven the input medical image: {desc}, estimate the area of the ellipse enclosing the {label}, "
          "in square millimeters.\nAdditional information:\n")
FORMAT = "The answer should be a single decimal number without any units or additional text."


class LesionAreaTask(Task):
    name = "tl_area"
    family = "tl_size"  # the tl_size slices
    protocols = ("paper", "corrected")
    description = "Area of the tumour/lesion ellipse in mm^2 (example plugin)."
    k, unit, answer_names, decimals = 1, "mm2", ("area",), 2

    def prompt(self, sample, geometry):
        size = self.protocol.size_statement(sample.pixel_spacing, geometry, "mm")
        return PROMPT.format(desc=sample.image_description, label=sample.label) + size + self.protocol.format_block(FORMAT)

    def true_values(self, sample):
        major, minor = super().true_values(sample)[:2]
        return (math.pi / 4.0 * major * minor,)

    def plausible_range(self, sample):
        (w, h), (sx, sy) = sample.image_size, sample.pixel_spacing
        return 0.0, w * sx * h * sy

    def score(self, samples, predictions):
        return measurement_scores(self, samples, predictions)  # MAE, MRE, MAE_cov, MRE_cov, SR
