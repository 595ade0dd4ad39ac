"""The planner's direct prompt dump and hash equal pydantic's dump and ``stable_hash`` exactly
(plan.jsonl and every cache key stay byte-identical), for any text."""

from __future__ import annotations

import pytest

from medvision_eval.planning import PlannedRequest, prompt_of
from medvision_eval.schema import ImagePart, Message, TextPart, stable_hash

TEXTS = ["plain", "quotes \" and \\ back", "new\nline\ttab\x00nul", "unicode é ü 字 °C ×", "emoji 😀", "lone \ud800 surrogate",
         "", "<answer>1.0, 2.0</answer>"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("image_first", [False, True])
def test_prompt_of_equals_model_dump_and_stable_hash(text, image_first):
    parts = [TextPart(text=text), ImagePart(ref=f"Datasets/x/{text}.nii.gz|2|7|minmax")]
    messages = [Message(role="system", content=[TextPart(text="sys " + text)]),
                Message(role="user", content=parts[::-1] if image_first else parts)]
    prompt, digest = prompt_of(messages)
    expected = [m.model_dump(mode="json") for m in messages]
    assert prompt == expected and list(map(list, (d.keys() for d in prompt))) == [list(d.keys()) for d in expected]
    assert digest == stable_hash(expected)


def test_prompt_of_other_part_types_go_through_pydantic():
    class Captioned(TextPart):
        caption: str = "c"

    messages = [Message(role="user", content=[TextPart(text="a")])]
    messages[0].content.append(Captioned(text="b"))
    prompt, digest = prompt_of(messages)
    assert prompt == [m.model_dump(mode="json") for m in messages] and digest == stable_hash(prompt)


def test_planned_request_builds_its_answer_spec_once_when_asked():
    calls = []

    class Task:
        def answer_spec(self, sample):
            calls.append(sample)
            return "spec"

    request = PlannedRequest("sample", [], task=Task())
    assert calls == []
    assert request.answer == "spec" and request.answer == "spec" and calls == ["sample"]
    with pytest.raises(TypeError):
        PlannedRequest("sample", [])
