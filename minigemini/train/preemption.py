"""Pre-emption: on SIGTERM or SIGUSR1 (what Slurm sends before it stops a job) finish the current
optimizer step, write a checkpoint, and stop training cleanly.

The signal handler only sets a flag; the callback acts at the next step end, where the Trainer can save.
Under several ranks the flag is all-reduced every step, so all ranks save and stop at the same step even
when the signal reached only some of them. The run then exits with 128 + the signal number (not 0: a
`train stage1 && train stage2` chain must not go on), and `resume_from_checkpoint=auto` continues it.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SIGNALS = ("SIGTERM", "SIGUSR1")


class PreemptionCallback(TrainerCallback):
    """Installs the SIGTERM/SIGUSR1 handlers while training runs; `received` names the signal that stopped it."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._pending: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self._pending = signal.Signals(signum).name

    def install(self) -> PreemptionCallback:
        """Catch the signals from now on (a signal while the model loads stops the run at its first step)."""
        if self._previous:
            return self
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM/SIGUSR1 will not save a checkpoint")
            return self
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.install()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        signum = self._agreed_signal(args)
        if signum:
            self.received = signal.Signals(signum).name
            logger.warning("%s received: saving a checkpoint at step %d and stopping", self.received,
                           state.global_step)
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous signal handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _agreed_signal(self, args: Any) -> int:
        """The signal any rank received (max over ranks), 0 if none."""
        local = int(getattr(signal, self._pending)) if self._pending else 0
        if args.world_size > 1 and dist.is_initialized():
            flag = torch.tensor([local], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = int(flag.item())
        return local
