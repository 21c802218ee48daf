"""MiniGeminiTrainer: `transformers.Trainer` plus only what it lacks for this model.

- batches carry `sample_ids` / `skipped_samples` (and `packed_rows` under `data.packing`): popped before
  `forward`; skipped samples are counted over all ranks and reported at the end (or stop the run at once
  under fail-fast);
- a non-finite loss stops the run naming the step and the batch's sample ids (or, with
  `nan_policy="skip"`, that step applies no update: optimizer, scheduler and gradient scaler are left as they
  were), decided on all ranks together, so no rank hangs;
- modality/length-grouped sampling, an optional separate learning rate for mining + projector,
  DeepSpeed CPU Adam under ZeRO-Offload;
- samples/s and tokens/s (text + image tokens) in the logs, and the padding fraction of packed batches;
- saving by role (`saving.py`): checkpoints (written atomically, with the fault report) hold the trained
  weights, optimizer, scheduler, RNG and trainer state (under DeepSpeed: DeepSpeed's full checkpoint); the
  export is a complete `save_pretrained` model (+ processor, + `mm_projector.safetensors`), or adapter +
  non-LoRA trainables.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from . import saving
from .stages import connector_parameters

logger = logging.getLogger(__name__)

BOOKKEEPING_KEYS = ("sample_ids", "skipped_samples", "packed_rows")  # collator outputs that are no model inputs


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf (message names the step and the batch's sample ids)."""


class BadSampleError(RuntimeError):
    """A training sample failed to load while `data.on_bad_sample=fail`."""


class MiniGeminiTrainer(Trainer):
    """Trainer for MiniGemini models; extra keyword arguments are described in the module docstring."""

    def __init__(self, *args: Any, mm_learning_rate: float | None = None, nan_policy: str = "stop",
                 on_bad_sample: str = "skip", group_by_modality_length: bool = True, **kwargs: Any) -> None:
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        if on_bad_sample not in ("skip", "fail"):
            raise ValueError(f"on_bad_sample must be 'skip' or 'fail', got {on_bad_sample!r}")
        super().__init__(*args, **kwargs)
        if nan_policy == "skip" and self.is_deepspeed_enabled:
            raise ValueError("training.nan_policy=skip is not supported under DeepSpeed (its engine owns the "
                             "gradients); use nan_policy=stop")
        self.mm_learning_rate = mm_learning_rate
        self.nan_policy = nan_policy
        self.on_bad_sample = on_bad_sample
        self.group_by_modality_length = group_by_modality_length
        self.skipped_samples: list[dict] = []  # this rank's
        self.nonfinite_steps: list[dict] = []
        self._batch_ids: list[str] = []
        self._batch_skipped: list[dict] = []
        self._skip_update = False  # nan_policy=skip: this optimizer step applies no update
        self._save_role = saving.EXPORT  # CHECKPOINT while _save_checkpoint runs
        self._packed_tokens: int | None = None  # real tokens of this packed micro-batch (no attention_mask to count)
        self._window = [0, 0, 0, 0, 0]  # samples, text tokens, image tokens, packed tokens, packed slots (since log)
        self._window_start: float | None = None

    # ---- data ----------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_modality_length or not hasattr(dataset, "modality_lengths"):
            return super()._get_train_sampler(train_dataset)
        from ..data.sampler import ModalityLengthGroupedSampler

        args = self.args
        return ModalityLengthGroupedSampler(
            dataset.modality_lengths, batch_size=args.train_batch_size,
            world_size=args.world_size * args.gradient_accumulation_steps,
            seed=args.data_seed if args.data_seed is not None else args.seed, group_by_modality=True)

    # ---- optimizer ---------------------------------------------------------------------------------------
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Param groups (decay / no decay) x (LLM and towers / mining + projector with `mm_learning_rate`)."""
        offload = self.is_deepspeed_enabled and self.args.hf_deepspeed_config.is_offload()
        if self.optimizer is not None or (self.mm_learning_rate is None and not offload):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        connector = {id(p) for p in connector_parameters(self.accelerator.unwrap_model(opt_model))}
        groups = []
        for is_conn in (False, True):
            for is_decay in (True, False):
                params = [p for n, p in opt_model.named_parameters()
                          if p.requires_grad and (id(p) in connector) == is_conn and (n in decay) == is_decay]
                if params:
                    group = {"params": params, "weight_decay": self.args.weight_decay if is_decay else 0.0}
                    if is_conn and self.mm_learning_rate is not None:
                        group["lr"] = self.mm_learning_rate
                    groups.append(group)
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            a = self.args
            self.optimizer = DeepSpeedCPUAdam(groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                              eps=a.adam_epsilon, adamw_mode=True)
        else:
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = cls(groups, **kwargs)
        return self.optimizer

    # ---- one step ------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        self._batch_ids = [str(s) for s in (inputs.pop("sample_ids", None) or [])]
        self._batch_skipped = list(inputs.pop("skipped_samples", None) or [])
        self.skipped_samples.extend(self._batch_skipped)
        packed_rows = inputs.pop("packed_rows", None)
        self._packed_tokens = sum(map(sum, packed_rows)) if packed_rows is not None else None
        self._count_tokens(inputs, packed_rows)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        for key in BOOKKEEPING_KEYS:
            inputs.pop(key, None)
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if model.training:
            loss = result[0] if return_outputs else result
            self._check_step(loss)
        return result

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        inputs = {k: v for k, v in inputs.items() if k not in BOOKKEEPING_KEYS}  # also when no labels (no compute_loss)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _check_step(self, loss: torch.Tensor) -> None:
        """One all-reduce per micro-batch: any rank with a non-finite loss or (fail-fast) a bad sample."""
        flags = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0,
                              float(len(self._batch_skipped))], device=loss.device)
        if self.args.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags)
        step = self.state.global_step + 1
        if flags[1] > 0 and self.on_bad_sample == "fail":
            bad = self._gather_objects([self._describe_bad(s) for s in self._batch_skipped])
            lines = "\n".join(f"  rank {r}: {text}" for r, items in enumerate(bad) for text in items)
            raise BadSampleError(f"step {step}: training sample(s) failed to load (data.on_bad_sample=fail):\n{lines}\n"
                                 "fix or remove them (minigemini prep validate), or set data.on_bad_sample=skip")
        if flags[0] > 0:
            per_rank = self._gather_objects((float(loss.detach()), self._batch_ids))
            who = "; ".join(f"rank {r}: loss {value}, samples {ids}" for r, (value, ids) in enumerate(per_rank)
                            if not math.isfinite(value))
            if self.nan_policy == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} (epoch {self.state.epoch or 0:.3f}): {who}. Check these samples "
                    "and the learning rate / precision, or set training.nan_policy=skip to skip such steps")
            logger.warning("non-finite loss at step %d (samples %s): the step is skipped (no update)", step, who)
            if not any(s["step"] == step for s in self.nonfinite_steps):
                self.nonfinite_steps.append({"step": step, "samples": who})
            self._skip_update = True

    def _describe_bad(self, skipped: dict) -> str:
        """The dataset's own error for a skipped sample (file, record, reason), else the skip record."""
        load = getattr(self.train_dataset, "load", None)
        if load is not None and skipped.get("index") is not None:
            try:
                load(skipped["index"])
            except Exception as exc:  # noqa: BLE001 - we only want its message
                return f"sample {skipped.get('sample_id')!r}: {exc}"
        return f"sample {skipped.get('sample_id')!r} (index {skipped.get('index')}): {skipped.get('reason')}"

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        """Called right before `optimizer.step()`: under nan_policy=skip, make this one step a no-op that
        accelerate reports as skipped, so the LR scheduler does not step either (the scaler is not called)."""
        optimizer = self.optimizer
        if getattr(optimizer, "_minigemini_skipped", False):  # the previous step was skipped: clear the flag
            optimizer._is_overflow = optimizer._minigemini_skipped = False
        if self._skip_update:
            self._skip_update = False

            def skipped_step(closure: Any = None) -> None:
                del optimizer.step  # back to the real method for the next step
                optimizer._is_overflow = optimizer._minigemini_skipped = True
                scaler = getattr(optimizer, "scaler", None)
                if scaler is not None:  # forget this step's unscale_ (as update() would), keep scale and tracker
                    from collections import defaultdict

                    from torch.amp.grad_scaler import _refresh_per_optimizer_state

                    scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

            optimizer.step = skipped_step
        return super()._get_grad_norm(model, grad_norm)

    def _gather_objects(self, obj: Any) -> list[Any]:
        if self.args.world_size > 1 and dist.is_initialized():
            out: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(out, obj)
            return out
        return [obj]

    # ---- logging ----------------------------------------------------------------------------------------------
    def _count_tokens(self, inputs: dict[str, Any], packed_rows: list[list[int]] | None = None) -> None:
        if self._window_start is None:
            self._window_start = time.time()
        ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
        if ids is None:
            return
        image_id = getattr(getattr(self.accelerator.unwrap_model(self.model), "config", None), "image_token_id", None)
        if packed_rows is not None:  # a packed row's samples come first, its padding after them
            valid = torch.arange(ids.shape[1], device=ids.device)[None] < torch.tensor(
                [sum(row) for row in packed_rows], device=ids.device)[:, None]
        else:
            valid = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        n_image = int(((ids == image_id) & valid).sum()) if image_id is not None else 0
        self._window[0] += sum(map(len, packed_rows)) if packed_rows is not None else ids.shape[0]
        self._window[1] += int(valid.sum()) - n_image
        self._window[2] += n_image
        if packed_rows is not None:
            self._window[3] += int(valid.sum())
            self._window[4] += ids.numel()

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        if self._packed_tokens is None or self.args.include_num_input_tokens_seen != "non_padding":
            return super()._track_num_input_tokens(inputs)
        tokens = torch.as_tensor(self._packed_tokens, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds samples/s and tokens/s (text + image, summed over ranks) to the training logs."""
        if "loss" in logs and self._window_start is not None:
            counts = torch.tensor(self._window, dtype=torch.float64, device=self.args.device)
            if self.args.world_size > 1 and dist.is_initialized():
                dist.all_reduce(counts)
            elapsed = max(time.time() - self._window_start, 1e-9)
            logs["samples_per_second"] = round(float(counts[0]) / elapsed, 3)
            logs["tokens_per_second"] = round(float(counts[1] + counts[2]) / elapsed, 1)
            logs["image_tokens_per_second"] = round(float(counts[2]) / elapsed, 1)
            if counts[4] > 0:  # data.packing: share of the packed rows' slots that are padding
                logs["padding_fraction"] = round(1.0 - float(counts[3]) / float(counts[4]), 4)
            if not math.isfinite(logs.get("loss", 0.0)):
                logs["loss"] = float("nan")
            self._window = [0, 0, 0, 0, 0]
            self._window_start = time.time()
        super().log(logs, start_time)

    def skip_report(self) -> dict[str, Any]:
        """Skipped samples of all ranks (collective call): {"count", "samples", "nonfinite_steps"}."""
        skipped = [s for part in self._gather_objects(self.skipped_samples) for s in part]
        return {"count": len(skipped), "samples": skipped, "nonfinite_steps": self.nonfinite_steps}

    # ---- saving ---------------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """`Trainer.train`; a resumed run continues the fault report stored in its checkpoint."""
        if isinstance(resume_from_checkpoint, str) and self.args.should_save:
            report = saving.load_fault_report(resume_from_checkpoint)
            self.skipped_samples, self.nonfinite_steps = report["samples"], report["nonfinite_steps"]
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _get_output_dir(self, trial: Any) -> str:
        staging = getattr(self, "_staging", None)
        return str(staging) if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, written into `.tmp-checkpoint-N/` with the fault report, then renamed into
        place: a run killed mid-save leaves the previous complete checkpoint as the latest."""
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"checkpoint-{self.state.global_step}"
        self._staging = saving.staging_folder(final)
        report = self.skip_report()  # collective: every rank calls _save_checkpoint
        self._save_role = saving.CHECKPOINT
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._save_role, staging, self._staging = saving.EXPORT, self._staging, None
        self._barrier()
        if self.args.should_save:
            written = staging / final.name
            saving.save_fault_report(written, report)
            saving.commit_folder(written, final)
            staging.rmdir()
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self._barrier()

    def _barrier(self) -> None:
        if self.args.world_size > 1 and dist.is_initialized():
            dist.barrier()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints under DeepSpeed rely on DeepSpeed's own full state (no extra 16-bit gather)."""
        if self._save_role == saving.CHECKPOINT and self.is_deepspeed_enabled:
            if self.args.should_save:
                self._save_side_files(Path(output_dir or self.args.output_dir))
            return
        super().save_model(output_dir, _internal_call)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write with the writer of the current role (checkpoint or export), then the processor."""
        if not self.args.should_save:
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        state = state_dict if state_dict is not None else model.state_dict()
        saving.WRITERS[self._save_role](model, out, state)
        self._save_side_files(out)

    def _save_side_files(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(out)
