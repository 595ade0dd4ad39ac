"""LLM-judge re-parse of unparsed answers, as the later official pipeline does it
(``script/llm-parsing/`` of YongchengYAO/MedVision @ 2f20f64; facts in :mod:`medvision_eval.later`).

The rule is *strict first*: whenever the run's own parser produced an answer, that answer stands
and the judge is not even asked. Only failed parses go to the judge, which sees the response text
alone (never the image, never the ground truth) and returns a JSON object naming a verbatim
``span`` of the response and the ``values`` in it. A judged answer is accepted only when the span
really occurs in the response and the numbers read back from the span *by our own regex* are
exactly the judge's values, k of them - so a judge cannot invent digits, only point at them.

Any registered model can be the judge (``--judge NAME -J key=value``). Its identity (adapter
identity, generation settings, judge-prompt fingerprint) is part of the cache key of every judge
call, and both parses are recorded per sample: ``judged_<task>.jsonl`` holds the raw (strict)
parse, the judged parse, the decision mode and reason, the judge's raw output and its identity.
The score step then scores the judged parses (``scoring.score_run`` reads these files).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import later
from .schema import AnswerSpec, GenerationSettings, Message, ParseStatus, Prediction, Request, TextPart, stable_hash

JUDGED_PREFIX = "judged_"
CACHE_FILE = "judge_cache.jsonl"

# Judge-visible description and answer count per family (judge_config.TASK_SPECS @ 2f20f64).
FAMILY_SPECS: dict[str, dict[str, Any]] = {
    "tl_size": {"arity": 2, "description": (
        "two numbers: the major axis length and the minor axis length of an ellipse, in millimetres, in that order")},
    "ad_measure": {"arity": 1, "description": "a single number: either a distance in millimetres or an angle in degrees"},
    "detection": {"arity": 4, "description": (
        "four numbers: the bounding-box coordinates x_lower_left, y_lower_left, x_upper_right, y_upper_right")},
}

# The official judge prompt strings (judge_prompts.SYSTEM_PROMPT / USER_TEMPLATE / NO_STEPS_NOTE @ 2f20f64).
SYSTEM_PROMPT = """You extract numeric answers from a vision-language model's response to a medical measurement task.

You are given ONLY the response text. You never see the image and never see the ground truth. Do not judge correctness. Do not compute anything. Do not infer a value that is not written. Report only what the response literally states.

QUOTING
- Quote every span VERBATIM from the response, copied character for character. Never paraphrase, never reformat or round a number, never fix a typo.
- Include at least {min_ctx} characters of surrounding context in a span so it can be located unambiguously.
- The numbers you report must be exactly the numbers that appear in the span you quoted, in the order they are written there.

WHAT COUNTS AS A FINAL ANSWER
- A final answer counts as stated no matter how it is wrapped. All of these are stated answers: <answer>...</answer>, \\\\boxed{{...}}, **Answer:** ..., <final-answer>...</final-answer>, a LaTeX display, or a plain sentence such as "The major axis length is 20.0 mm and the minor axis length is 18.0 mm".
- The final answer is the quantity the TASK line asks for, in the unit it names. It is NOT an intermediate coordinate. If the response works through numbered steps, the final answer is the value the last step computes, never the (x, y) pairs an early step reports.
- If the response states several candidate answers and never settles on one, quote the LAST one stated.

CHOOSING final_answer.status -- exactly one of two values
- "present"        The response states a final answer. Use this even when the text is cut off AFTER the answer was stated, and even if the answer looks wrong. Once an answer is on the page, the status is "present".
- "no_conclusion"  No final answer is stated anywhere: the response refuses, only describes the image, says it cannot measure, is empty, stops part-way through its working, or simply ends without giving the requested quantity.

Do not try to work out WHY an answer is missing, and do not report it. Whether the response ran out of room or chose not to answer is decided elsewhere, from the generation settings; it cannot be read off the text and guessing at it is worse than leaving it alone. Your job is only whether an answer is there.

A line of the form
    ...[12345 characters elided]...
means WE removed the middle of a long response before showing it to you. The text after it is the model's real ending, so keep reading to the end before concluding that no answer is stated.

Set "span" to "" and "values" to [] whenever status is not "present".

OUTPUT
Return a single JSON object and nothing else: no prose, no markdown fence, no explanation, no trailing commentary. It must have exactly these keys, in this shape:

{output_skeleton}

Every key shown is required. Do not add keys. Do not rename keys. Do not replace an object with a string. "values" holds bare JSON numbers -- never strings, never tuples, never expressions."""

USER_TEMPLATE = """TASK: the model was asked to produce {description}.
EXPECTED_ANSWER_COUNT: {arity} number(s).
{steps_block}
RESPONSE:
<<<
{response}
>>>

Return only the JSON object."""

NO_STEPS_NOTE = """
This task prescribes a single reasoning step whose result IS the final answer, so a <step-1-answer> block here does hold the answer and counts as a stated final answer. Return no "steps" array.
"""

ELISION = "\n...[{n} characters elided]...\n"


def window(text: str) -> str:
    """Long responses are shown head + marked elision + tail (the answer lives at the tail)."""
    if len(text) <= later.RESPONSE_WINDOW_TRIGGER:
        return text
    cut = len(text) - later.RESPONSE_WINDOW_HEAD - later.RESPONSE_WINDOW_TAIL
    return text[: later.RESPONSE_WINDOW_HEAD] + ELISION.format(n=cut) + text[-later.RESPONSE_WINDOW_TAIL:]


def skeleton(family: str) -> str:
    arity = FAMILY_SPECS[family]["arity"]
    obj = {"final_answer": {"status": "present | no_conclusion", "span": "<verbatim quote from the response>",
                            "values": ["<number>"] * arity}}
    return json.dumps(obj, indent=2)


def judge_messages(family: str, response: str) -> list[Message]:
    spec = FAMILY_SPECS[family]
    system = SYSTEM_PROMPT.format(min_ctx=later.MIN_SPAN_CONTEXT_CHARS, output_skeleton=skeleton(family))
    user = USER_TEMPLATE.format(description=spec["description"], arity=spec["arity"], steps_block=NO_STEPS_NOTE,
                                response=window(response))
    return [Message(role="system", content=[TextPart(text=system)]), Message(role="user", content=[TextPart(text=user)])]


def prompt_fingerprint(family: str) -> str:
    """Hash of everything that reaches the judge for a family (rendered on a sentinel response)."""
    rendered = [m.model_dump(mode="json") for m in judge_messages(family, "\x00SENTINEL\x00")]
    return stable_hash({"messages": rendered, "window": [later.RESPONSE_WINDOW_TRIGGER, later.RESPONSE_WINDOW_HEAD,
                                                         later.RESPONSE_WINDOW_TAIL], "elision": ELISION})


def decode(text: str | None) -> dict[str, Any] | None:
    """The judge's JSON object (a surrounding code fence or prose is tolerated), or None."""
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except (json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def verify(response: str, obj: dict[str, Any] | None, arity: int) -> tuple[str, tuple[float, ...] | None, str]:
    """(status, values, reason): 'present' with values re-read from a span that really occurs in
    the response; 'no_conclusion'; or 'invalid' (bad shape, span not found, numbers disagree)."""
    fa = obj.get("final_answer") if isinstance(obj, dict) else None
    if not isinstance(fa, dict):
        return "invalid", None, "judge output is not a {final_answer: {...}} object"
    status = fa.get("status")
    if status == "no_conclusion":
        return "no_conclusion", None, "judge found no stated answer"
    if status != "present":
        return "invalid", None, f"unknown status {status!r}"
    span = fa.get("span")
    if not isinstance(span, str) or not span.strip() or len(span) > later.MAX_ANSWER_SPAN_CHARS:
        return "invalid", None, "missing or over-long span"
    if span not in response:
        return "invalid", None, "span does not occur in the response"
    read = later.find_numbers(span)  # the official span transcription regex
    claimed = fa.get("values")
    if not isinstance(claimed, list) or len(claimed) != arity:
        return "invalid", None, f"expected {arity} values"
    try:
        claimed_f = [float(v) for v in claimed]
    except (TypeError, ValueError):
        return "invalid", None, "values are not numbers"
    numbers = [float(x) for x in read]
    # the values must be the last `arity` numbers the span states, in order
    if len(numbers) < arity or numbers[-arity:] != claimed_f:
        return "invalid", None, "values are not the numbers in the span"
    return "present", tuple(claimed_f), "ok"


def decide(strict: Prediction, judged: tuple[str, tuple[float, ...] | None, str] | None) -> tuple[Prediction, str]:
    """Strict first: a parsed answer stands whatever the judge says; otherwise a verified judge
    answer is recovered. Returns (prediction, mode)."""
    if strict.status == ParseStatus.ok:
        return strict, "conclusion_in_format"
    if judged is None:
        return strict, "undetermined"
    status, values, reason = judged
    if status == "present" and values is not None:
        return Prediction(status=ParseStatus.ok, values=values, detail="recovered by the LLM judge"), "conclusion_off_format"
    if status == "no_conclusion":
        return strict, "no_conclusion"
    return strict, "undetermined"


class Judge:
    """A registered model used as judge; caches its calls in the run directory."""

    def __init__(self, adapter: Any, *, batch_size: int = 8) -> None:
        self.adapter = adapter
        self.batch_size = max(1, batch_size)

    def identity(self) -> dict[str, Any]:
        return {"model": self.adapter.identity(), "generation": self.generation().model_dump(),
                "prompt": {f: prompt_fingerprint(f) for f in sorted(FAMILY_SPECS)}}

    def generation(self) -> GenerationSettings:
        """The official judge decoding (judge_config @ 2f20f64): greedy, top_p 1, seed 1024, 4096 tokens."""
        return GenerationSettings(max_new_tokens=later.JUDGE_MAX_TOKENS, temperature=later.JUDGE_TEMPERATURE,
                                  top_p=later.JUDGE_TOP_P, seed=later.JUDGE_SEED)

    def key(self, family: str, response: str) -> str:
        return stable_hash({"judge": self.identity(), "family": family, "response": response}, n=32)

    def ask(self, items: Sequence[tuple[Any, str, str]], cache: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """items: (sample, family, response). Returns key -> {"text", "error"} (cached ones reused).

        The judge request carries the response text only; ``sample`` is there because the
        Request record requires it (real adapters never read it, see schema.Request)."""
        todo = [(sample, fam, text, self.key(fam, text)) for sample, fam, text in items]
        missing: dict[str, tuple[Any, str, str, str]] = {}
        for t in todo:
            if t[3] not in cache:
                missing.setdefault(t[3], t)
        generation = self.generation()
        pending = list(missing.values())
        for i in range(0, len(pending), self.batch_size):
            chunk = pending[i:i + self.batch_size]
            requests = [Request(sample_id=sample.id, task=f"judge:{fam}", messages=judge_messages(fam, text),
                                generation=generation, prompt_hash=key,
                                answer=AnswerSpec(k=1, names=("json",), unit="", low=0.0, high=0.0), sample=sample)
                        for sample, fam, text, key in chunk]
            responses = self.adapter.generate(requests)
            for (_, _, _, key), resp in zip(chunk, responses):
                cache[key] = {"text": resp.text, "error": resp.error}
        return {key: cache[key] for _, _, _, key in todo}


def load_cache(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = Path(run_dir) / CACHE_FILE
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                out[row["key"]] = {"text": row.get("text"), "error": row.get("error")}
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a torn last line: that call is simply asked again
    return out


def save_cache(run_dir: Path, cache: dict[str, dict[str, Any]]) -> None:
    from .store import atomic_write_text

    lines = [json.dumps({"key": k, **v}, sort_keys=True) for k, v in sorted(cache.items())]
    atomic_write_text(Path(run_dir) / CACHE_FILE, "\n".join(lines) + ("\n" if lines else ""))


def judge_run(run_dir: Path, judge: Judge, *, registry: Any = None) -> dict[str, dict[str, int]]:
    """Re-parse a run's failed answers with ``judge``; write ``judged_<task>.jsonl`` (both parses per
    sample, the mode, the judge identity) and the judge cache. Returns per-task mode counts."""
    from .factory import build_task
    from .plugins import Registry
    from .protocol import Protocol
    from .results import load_run_record
    from .scoring import predict_from_record
    from .store import atomic_write_text, load_plan, load_responses

    run_dir = Path(run_dir)
    record = load_run_record(run_dir)
    protocol = Protocol.model_validate(record.protocol)
    registry = registry or Registry.discover()
    plan = load_plan(run_dir)
    responses = load_responses(run_dir)
    by_task: dict[str, list[Any]] = {}
    for entry in plan:
        by_task.setdefault(entry.task, []).append(entry)
    cache = load_cache(run_dir)
    identity = judge.identity()
    summary: dict[str, dict[str, int]] = {}
    for name, entries in by_task.items():
        family = name if name in FAMILY_SPECS else None
        task = build_task(registry, name, protocol)
        strict = {}
        asks = []
        for e in entries:
            rec = responses.get(e.key)
            strict[e.sample.id] = predict_from_record(task, e.sample, rec)
            text = rec.response.text if rec is not None and rec.completed else None
            if family and strict[e.sample.id].status != ParseStatus.ok and text:
                asks.append((e.sample, family, text))
        answers = judge.ask(asks, cache) if asks else {}
        rows = []
        counts: dict[str, int] = {}
        for e in entries:
            sid = e.sample.id
            rec = responses.get(e.key)
            text = rec.response.text if rec is not None and rec.completed else None
            raw = strict[sid]
            judged = None
            answer = None
            if family and raw.status != ParseStatus.ok and text:
                answer = answers[judge.key(family, text)]
                judged = verify(text, decode(answer["text"]), FAMILY_SPECS[family]["arity"]) if not answer["error"] \
                    else ("invalid", None, f"judge call failed: {answer['error']}")
            final, mode = decide(raw, judged)
            counts[mode] = counts.get(mode, 0) + 1
            rows.append({
                "id": sid,
                "raw": {"status": raw.status.value, "values": list(raw.values) if raw.values else None, "detail": raw.detail},
                "judged": {"status": final.status.value, "values": list(final.values) if final.values else None,
                           "detail": final.detail},
                "mode": mode,
                "reason": judged[2] if judged else ("strict parse ok" if raw.status == ParseStatus.ok else "not judged"),
                "judge_output": answer["text"] if answer else None,
            })
        header = {"judge": identity, "task": name, "commit": later.JUDGE_COMMIT}
        lines = [json.dumps({"header": header}, sort_keys=True)] + [json.dumps(r, sort_keys=True) for r in rows]
        atomic_write_text(run_dir / f"{JUDGED_PREFIX}{name}.jsonl", "\n".join(lines) + "\n")
        summary[name] = counts
    save_cache(run_dir, cache)
    return summary


def load_judged(run_dir: Path, task: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
    """(header, id -> row) of ``judged_<task>.jsonl`` if the run has been judged, else None."""
    path = Path(run_dir) / f"{JUDGED_PREFIX}{task}.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    header = json.loads(lines[0]).get("header", {}) if lines else {}
    rows = {}
    for line in lines[1:]:
        row = json.loads(line)
        rows[row["id"]] = row
    return header, rows
