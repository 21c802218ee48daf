"""Training output in quiet mode: one progress bar per run (loss in the bar, no printed log dicts) and
one summary line at the end. `--verbose` keeps the Trainer's own bar, log dicts and the parts table."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..logs import verbose


class PhaseProgress(TrainerCallback):
    """A progress bar named after the phase, the last logged loss as its postfix; gone when the run ends."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            leave=False, dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_quiet_progress(trainer: Any, desc: str) -> None:
    """Quiet mode: replace the Trainer's bar / log printer by one `PhaseProgress` (unless the caller gave one)."""
    if verbose():
        return
    for printer in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(printer)
    if not any(isinstance(cb, PhaseProgress) for cb in trainer.callback_handler.callbacks):
        trainer.add_callback(PhaseProgress(desc))


def parts_summary(report: dict[str, tuple[int, int]]) -> str:
    """'mining + projector (60,928 of 767,696 parameters)': the trainable parts on one line."""
    parts = [name for name, (trainable, _) in report.items() if trainable]
    trainable = sum(t for t, _ in report.values())
    total = sum(n for _, n in report.values())
    return f"{' + '.join(parts) or 'nothing'} ({trainable:,} of {total:,} parameters)"


def summary_line(result: Any, seconds: float) -> str:
    """One line for a finished run: steps, time, first -> last logged loss, skipped samples, trained parts."""
    losses = [result.losses[k] for k in sorted(result.losses)]
    loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
    return (f"{result.global_step} steps in {seconds:.0f} s, {loss}, {result.skipped.get('count', 0)} samples "
            f"skipped; trained {parts_summary(result.trainable)}")


def print_run_summary(result: Any, cfg: Any, seconds: float) -> None:
    """The end of `minigemini train` / `python -m minigemini.train.run`: ONE line (rank 0 only) with the steps,
    final loss, wall time and where the model went (`run.run_summary`)."""
    from .run import run_summary

    if result.trainer is None or result.trainer.is_world_process_zero():
        print(run_summary(result, seconds, cfg.training.export, cfg.lora.enabled), flush=True)


__all__ = ["PhaseProgress", "use_quiet_progress", "parts_summary", "summary_line", "print_run_summary"]
