"""A model adapter from outside medvision-eval: the smallest complete one."""

from medvision_eval.models.base import ModelAdapter
from medvision_eval.schema import Response


class MidpointModel(ModelAdapter):
    backend = "example"
    default_batch_size = 32

    def generate(self, requests):
        out = []
        for request in requests:
            spec = request.answer
            middle = (spec.low + spec.high) / 2
            out.append(Response(text=spec.render([middle] * spec.k)))
        return out
