"""Trainer callbacks: a rich progress bar with loss and ETA, and a loss recorder."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class LossRecorder(TrainerCallback):
    """Keeps every logged training / validation loss (also in ``trainer.state.log_history``)."""

    def __init__(self) -> None:
        self.train: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.train.append((state.global_step, float(logs["loss"])))
        if "eval_loss" in logs:
            self.eval.append((state.global_step, float(logs["eval_loss"])))


class RichProgress(TrainerCallback):
    """One bar over optimiser steps: step/total, last loss, validation loss, elapsed, ETA."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.progress: Any = None
        self.task: Any = None
        self.loss = "–"
        self.val = "–"

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                           loss=self.loss, val=self.val)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, loss=self.loss, val=self.val)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = f"{float(logs['loss']):.4f}"
        if "eval_loss" in logs:
            self.val = f"{float(logs['eval_loss']):.4f}"
        if self.progress is not None:
            self.progress.update(self.task, loss=self.loss, val=self.val)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
