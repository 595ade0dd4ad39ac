"""The configuration of one run (``run.json``'s ``config``): what was asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RunConfig(BaseModel):
    """Everything a run depends on; written to ``run.json``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str]
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    output: str | None = None
    limit: int | float | None = None  # N samples per config, or a fraction in (0, 1) of each (lmms-eval)
    batch_size: int | None = None
    protocol: str = "paper"
    seed: int = 0
    no_cache: bool = False
    shard: tuple[int, int] | None = None  # (index, count), index 0-based

    @field_validator("tasks")
    @classmethod
    def _tasks_nonempty(cls, value: list[str]) -> list[str]:
        cleaned = [t.strip() for t in value if t.strip()]
        if not cleaned:
            raise ValueError("no task given; e.g. --tasks detection,tl_size,ad_measure")
        return cleaned

    @field_validator("limit")
    @classmethod
    def _limit_positive(cls, value: int | float | None) -> int | float | None:
        if value is None:
            return None
        if 0 < value < 1:
            return float(value)
        if value < 1 or value != int(value):
            raise ValueError("--limit must be a whole number of samples >= 1 or a fraction between 0 and 1")
        return int(value)

    def limit_for(self, n: int) -> int:
        """How many of a config's ``n`` samples to take: the first N, or ceil(fraction * n) as lmms-eval."""
        if self.limit is None:
            return n
        if isinstance(self.limit, float) and self.limit < 1:
            import math

            return min(n, math.ceil(n * self.limit))
        return min(n, int(self.limit))

    @field_validator("shard")
    @classmethod
    def _shard_valid(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            index, count = value
            if count < 1 or not 0 <= index < count:
                raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
        return value

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return Path("runs") / safe


def parse_task_spec(spec: str) -> tuple[str, str | None]:
    """``detection:KiTS23`` -> ("detection", "KiTS23"); ``tl_size`` -> ("tl_size", None)."""
    name, _, selector = spec.partition(":")
    return name.strip(), (selector.strip() or None)
