"""Typed records that flow through the harness.

Data flows one way::

    Sample --task.prompt--> Request --adapter.generate--> Response
           --task.parse--> Prediction --task.score--> per-sample metrics --task.aggregate--> results

Every record here is a pydantic v2 model so that what is written to disk can be read back
and validated (``samples_<task>.jsonl``, ``responses.jsonl``, ``results.json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "2.0"  # of results.json; the model is results.RunResults


class ParseStatus(str, Enum):
    """Outcome of parsing one model answer. Failures are counted, never hidden."""

    ok = "ok"
    malformed = "malformed"  # numbers present but not the expected shape/range
    missing = "missing"  # no usable answer at all (empty text, too few numbers)
    refused = "refused"  # the model declined to answer
    error = "error"  # the model call itself failed (no text to parse)


class Target(BaseModel):
    """Ground truth with units. ``values`` are in ``unit``; ``names`` label each value."""

    model_config = ConfigDict(frozen=True)

    values: tuple[float, ...]
    unit: str  # "relative" (boxes), "mm", "degree"
    names: tuple[str, ...]


class ImageRef(BaseModel):
    """Where the 2D image of a sample comes from: a slice of a volume under the data root."""

    model_config = ConfigDict(frozen=True)

    path: str  # posix path relative to the data root
    slice_axis: int  # 0 sagittal, 1 coronal, 2 axial (RAS+ voxel axes)
    slice_index: int

    def key(self) -> str:
        return f"{self.path}#{self.slice_axis}:{self.slice_index}"


class Sample(BaseModel):
    """One 2D slice plus one quantitative target."""

    model_config = ConfigDict(frozen=True)

    id: str  # unique within its task family, stable across runs
    task: str  # task family: detection | tl_size | ad_measure | <plugin task>
    config: str  # benchmark config, e.g. "KiTS23_BoxSize_Task01_Axial_Test"
    dataset: str
    split: str = "test"
    index: int  # position in the config's dataset order (what --limit cuts)
    image: ImageRef
    image_size: tuple[int, int]  # (width, height) of the rendered 2D image, pixels
    pixel_spacing: tuple[float, float]  # (width, height) size of one pixel, mm
    label: str  # human-readable label / metric name
    label_id: int | None = None
    modality: str = ""  # CT | MR | US | XR | PET
    plane: str = ""  # A | C | S
    image_description: str = ""
    target: Target
    extra: dict[str, Any] = Field(default_factory=dict)


def built(cls: type[BaseModel], fields: dict[str, Any]) -> Any:
    """``cls.model_construct(**fields)`` for ``fields`` that name every field of ``cls`` in its order,
    already of the types validation would give them, at a fraction of its cost (the planner builds tens of
    thousands of samples). ``fields`` becomes the instance's own ``__dict__``. Models with private
    attributes, extra fields or a post-init hook are built by ``model_construct`` itself."""
    count = _FIELD_COUNT.get(cls)
    if count is None:
        plain = not (cls.__pydantic_post_init__ or cls.__private_attributes__ or cls.model_config.get("extra") == "allow")
        count = _FIELD_COUNT[cls] = len(cls.__pydantic_fields__) if plain else -1
    if len(fields) != count:
        return cls.model_construct(**fields)
    model = _new_object(cls)
    _set_dict(model, fields)
    _set_fields_set(model, set(fields))
    _set_extra(model, None)
    _set_private(model, None)
    return model


_new_object = object.__new__
# BaseModel's own slot descriptors (what object.__setattr__ finds for these names, without the lookup)
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_FIELD_COUNT: dict[type, int] = {}  # model class -> its number of fields, or -1: model_construct it


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image in a chat message. ``image`` holds a PIL image in memory; ``ref`` identifies it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["image"] = "image"
    ref: str
    image: Any = Field(default=None, exclude=True)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: list[TextPart | ImagePart]

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


def arrange_messages(messages: Sequence[Message], image_first: bool) -> list[Message]:
    """The model's message order: tasks build text-first messages; ``image_first`` moves each
    message's image parts before its text parts (relative order kept within each kind).

    The official v1 wrappers differ (MedVision c221615, ``lmms_eval/models``): the vLLM wrappers
    and MedGemma send the text first, Lingshu, LLaVA-Med, HealthGPT, HuatuoGPT-Vision, MedDr and
    Gemini the image first. The planner applies this to every request; the SFT data builder too.
    """
    if not image_first:
        return list(messages)
    out = []
    for m in messages:
        images = [p for p in m.content if isinstance(p, ImagePart)]
        if not images:
            out.append(m)
            continue
        texts = [p for p in m.content if not isinstance(p, ImagePart)]
        out.append(m.model_copy(update={"content": images + texts}))
    return out


class GenerationSettings(BaseModel):
    """Decoding settings. Greedy by default, as the paper ran."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


class AnswerSpec(BaseModel):
    """What a well-formed answer to a request contains, so baselines can answer in text.
    It holds no truth: the correct values are ``Task.true_values(sample)``."""

    model_config = ConfigDict(frozen=True)

    k: int  # number of values
    names: tuple[str, ...]
    unit: str
    low: float  # plausible range for uniform guessing
    high: float
    template: str = "{values}"  # "{values}" is replaced by the comma-separated numbers
    decimals: int = 4

    def render(self, values: list[float] | tuple[float, ...]) -> str:
        body = ", ".join(f"{v:.{self.decimals}f}" for v in values)
        return self.template.replace("{values}", body)


class Request(BaseModel):
    """A fully materialised chat request for one sample: what a model adapter sees.

    It carries no ground truth and no sample record (only its id, to key answers)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sample_id: str
    task: str
    messages: list[Message]
    generation: GenerationSettings
    answer: AnswerSpec
    prompt_hash: str


class Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Response(BaseModel):
    """What a model returned for one request; ``error`` set means the call failed."""

    text: str | None = None
    error: str | None = None
    latency_s: float = 0.0
    usage: Usage = Field(default_factory=Usage)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class Prediction(BaseModel):
    status: ParseStatus
    values: tuple[float, ...] | None = None
    detail: str | None = None  # why it is not ok, for the report


class Interval(BaseModel):
    """A point value with its 95 % interval; ``None`` where undefined (written as JSON null)."""

    value: float | None
    low: float | None
    high: float | None


class PerceivedGeometry(BaseModel):
    """Image geometry as the model perceives it, all sizes (width, height) in pixels.

    ``canvas``  the image the vision encoder actually receives (after resize and padding);
    ``content`` the part of ``canvas`` covered by the image (== canvas when nothing is padded);
    ``v1``      what the official v1 code stated for this model (kept for the ``paper`` protocol,
                wrong for padding/tiling models: official issue #20).

    Adapters answer it (``ModelAdapter.perceived_geometry``); tasks read it to state sizes.
    """

    model_config = ConfigDict(frozen=True)

    original: tuple[int, int]
    canvas: tuple[int, int]
    content: tuple[int, int]
    v1: tuple[int, int]
    # The number type v1 computed the stated pixel size in: the float32 header spacing divided by
    # a Python float ratio stays float32 (numpy 2) for every v1 family with a fixed or computed
    # size; Qwen2.5-VL/Lingshu divide by a ratio of numpy int64s, which makes it float64.
    v1_float32: bool = True

    @classmethod
    def identity(cls, width: int, height: int) -> "PerceivedGeometry":
        size = (int(width), int(height))
        return cls(original=size, canvas=size, content=size, v1=size)


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:n]
