"""Message order per model (issue 10 item 3): arrange_messages, the adapter property, the planner
applying it to every request, and the presets' official orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvision_eval.models.presets import preset_entries
from medvision_eval.plugins import Registry
from medvision_eval.runner import RunConfig, Runner
from medvision_eval.schema import ImagePart, Message, TextPart, arrange_messages

from toy import CountingModel, ToyData, ToyPlugin


def test_arrange_messages_moves_images_first_and_keeps_relative_order():
    system = Message(role="system", content=[TextPart(text="sys")])
    user = Message(role="user", content=[TextPart(text="a"), ImagePart(ref="i1"), TextPart(text="b"), ImagePart(ref="i2")])
    same = arrange_messages([system, user], False)
    assert [p.type for p in same[1].content] == ["text", "image", "text", "image"]
    out = arrange_messages([system, user], True)
    assert out[0] == system
    assert [getattr(p, "ref", None) or p.text for p in out[1].content] == ["i1", "i2", "a", "b"]
    assert [p.type for p in user.content] == ["text", "image", "text", "image"]  # input untouched


class OrderModel(CountingModel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.orders: list[list[str]] = []

    def generate(self, requests):
        self.orders.extend([p.type for p in r.messages[-1].content] for r in requests)
        return super().generate(requests)


def _run(tmp_path: Path, model: CountingModel):
    config = RunConfig(tasks=["toy"], model="counting", output=str(tmp_path / "run"))
    registry = Registry.discover(entry_points=False, extra_plugins=(ToyPlugin(),))
    return Runner(config, registry=registry, adapter=model, data=ToyData()).execute()


@pytest.mark.parametrize("arg,expected", [(None, ["text", "image"]), ("true", ["image", "text"]), (True, ["image", "text"]),
                                          ("false", ["text", "image"])])
def test_planner_applies_the_model_order_to_every_request(tmp_path, arg, expected):
    model = OrderModel() if arg is None else OrderModel(image_first=arg)
    summary = _run(tmp_path, model)
    assert summary.sent == 40 and len(model.orders) == 40
    assert all(order == expected for order in model.orders)


def test_order_is_part_of_the_prompt_so_answers_are_not_reused_across_orders(tmp_path):
    _run(tmp_path, OrderModel())
    flipped = OrderModel(image_first=True)
    _run(tmp_path, flipped)
    assert len(flipped.calls) == 40
    again = OrderModel(image_first=True)
    _run(tmp_path, again)
    assert again.calls == []


def test_presets_carry_the_official_v1_order():
    entries = {e.name: e for e in preset_entries()}
    image_first = {name for name, e in entries.items() if (e.defaults or {}).get("image_first")}
    assert image_first == {"lingshu-32b", "gemini-2.5-flash", "gemini-2.5-flash-tool"}
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-32b", "internvl3-38b", "gemma3-27b", "llama3.2-vision-11b",
                 "llava-onevision-72b", "medgemma-4b", "medvision-sft-7b-detect"):
        assert not (entries[name].defaults or {}).get("image_first", False), name


def test_adapter_settings_accept_image_first():
    from medvision_eval.models._common import AdapterSettings, parse_settings

    assert parse_settings(AdapterSettings, "x", {"image_first": "true"}).image_first is True
    assert parse_settings(AdapterSettings, "x", {}).image_first is False
