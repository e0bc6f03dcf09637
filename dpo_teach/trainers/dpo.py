"""DPO — and every loss of the registry :data:`dpo_teach.losses.LOSSES` — as one short training loop.

A step, for a batch of preference pairs (x, y_w, y_l):

1. one concatenated forward of the policy over chosen and rejected → log π_θ(y_w|x), log π_θ(y_l|x) [B]
   (:func:`dpo_teach.logprobs.concatenated_forward`; length-averaged for ORPO/SimPO);
2. the same under ``torch.no_grad()`` for the frozen reference π_ref — or the values precomputed once before
   training (``precompute_ref_logps=True``, after which the reference model is released);
3. the loss, e.g. DPO's  L = −log σ(β [log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)]),
   averaged over the batch; the gradient is accumulated over ``grad_accum`` micro-batches, clipped to
   ``max_grad_norm``, and AdamW steps with a linear warm-up.

Steps 1 and 3 are :func:`dpo_teach.trainers.dpo_step.dpo_step` (KTO's: ``kto_step``); the trainer passes it the
reference log-probs of step 2. Metrics use TRL's names: ``loss``, ``rewards/chosen`` = β (log π_θ(y_w|x) −
log π_ref(y_w|x)) (mean), ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``,
``logps/rejected``, ``logits/chosen``, ``logits/rejected``, plus ``grad_norm``, ``learning_rate`` (also as
``lr``), ``epoch``, ``step``; evaluation adds the same names prefixed ``eval_``. KTO (unpaired) logs the rewards
and log-probs of its desirable ("chosen") and undesirable ("rejected") completions and ``kl``, its reference
point. The settings are :class:`~dpo_teach.trainers.dpo_config.DPOConfig` (TRL's names too); the loop pieces
shared with the other trainers (batches, warm-up, logging) are in :mod:`dpo_teach.trainers.common`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from dpo_teach import distributed
from dpo_teach._validate import check_grad_norm, check_trainer_inputs
from dpo_teach.data import (
    KTOCollator,
    PreferenceCollator,
    Tokenized,
    load_rows,
    read_rows,
    tokenize_kto,
    tokenize_preference,
    unpair_preference_rows,
)
from dpo_teach.seed import seed_everything
from dpo_teach.trainers import checkpoints
from dpo_teach.trainers.common import (
    MetricLogger,
    accumulate_metrics,
    check_fits,
    clip_and_step,
    make_optimizer,
    mean_metrics,
    micro_batches,
    prepare_model,
    resolve_config,
    warmup_scheduler,
)
from dpo_teach.trainers.dpo_config import TRL_NAMES, DPOConfig, _is_trl_config
from dpo_teach.trainers.dpo_step import dpo_step, kto_step, reference_for, reference_logps

__all__ = ["TRL_NAMES", "DPOConfig", "DPOTrainer", "train_dpo"]  # DPOConfig, TRL_NAMES: dpo_config's

#: config fields that may differ between an interrupted run and its resumption
_NOT_COMPARED = ("progress", "device", "output_dir", "save_steps", "overwrite_output_dir")


class DPOTrainer:
    """Train ``model`` (a causal LM, in place) on preference rows with any registry loss.

    ``train_rows``/``eval_rows``: list of dicts, JSON/JSONL path or ``datasets.Dataset`` in TRL's format
    (``prompt``/``chosen``/``rejected``; for ``loss_type="kto"`` also ``prompt``/``completion``/``label``, and
    paired rows are unpaired into one desirable and one undesirable row each). ``ref_model``: the frozen π_ref;
    None means a frozen copy of ``model`` as it is now (with ``precompute_ref_logps`` no copy is made).
    """

    def __init__(
        self,
        model,
        tokenizer,
        train_rows,
        *,
        ref_model=None,
        eval_rows=None,
        config=None,
        callback=None,
        **kw,
    ):
        if _is_trl_config(config):
            config = DPOConfig.from_trl(config)
        self.config = resolve_config(DPOConfig, config, kw, "a DPOConfig (dpo_teach's, or a trl.DPOConfig)")
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a transformers causal LM, got {type(model).__name__}.")
        check_trainer_inputs(
            model, tokenizer, ref_model=ref_model, allowed_token_ids=self.config.allowed_token_ids
        )
        cfg, spec = self.config, self.config.spec
        self.model, self.tokenizer, self.callback = model, tokenizer, callback
        self.train_data = self._prepare(train_rows)
        self.eval_data = self._prepare(eval_rows) if eval_rows is not None else None
        if cfg.eval_steps is not None and self.eval_data is None:
            raise ValueError(
                f"eval_steps={cfg.eval_steps} evaluates on eval_rows, but no eval_rows were given; "
                "pass eval_rows=... or drop eval_steps."
            )
        self.data_fingerprint = checkpoints.data_fingerprint(self.train_data.examples)
        collator = PreferenceCollator if spec.paired else KTOCollator
        self.collate = collator(tokenizer, cfg.allowed_token_ids)
        if not spec.needs_reference and ref_model is not None:
            warnings.warn(f"{cfg.loss_type!r} needs no reference model; ref_model is ignored.", stacklevel=2)
        self.ref_model = ref_model if spec.needs_reference else None
        prepare_model(self.model, distributed.local_device(cfg.device), train=True)
        self.device = next(self.model.parameters()).device
        # under torchrun: the policy in DDP (rank 0's weights broadcast before the reference copy below)
        self.policy = distributed.wrap(self.model) if distributed.init(self.device) else self.model
        if spec.needs_reference and self.ref_model is None and not cfg.precompute_ref_logps:
            self.ref_model = copy.deepcopy(self.model)
        if self.ref_model is not None:
            prepare_model(self.ref_model, self.device, train=False)
        self.history: list[dict] = []

    def _prepare(self, rows) -> Tokenized:
        cfg = self.config
        kind = "preference" if cfg.spec.paired else "kto"
        raw = read_rows(rows)
        if kind == "kto" and raw and isinstance(raw[0], dict) and "chosen" in raw[0]:
            raw = unpair_preference_rows(raw)
        rows = load_rows(raw, kind)
        tokenize = tokenize_preference if kind == "preference" else tokenize_kto
        out = tokenize(rows, self.tokenizer, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                       truncation_mode=cfg.truncation_mode)  # fmt: skip
        check_fits(self.model, out, cfg.max_length)
        return out

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Mean loss over ``batch`` and per-example metrics: :func:`~dpo_teach.trainers.dpo_step.dpo_step` (or
        ``kto_step``) given π_ref's log-probs, the precomputed ones once the reference model is released."""
        step = dpo_step if self.config.spec.paired else kto_step
        return step(self.policy, batch, self.config, **reference_for(self.ref_model, batch, self.config))

    # ------------------------------------------------------------------ the loop
    def precompute_reference(self) -> None:
        """Store π_ref's log-probs in every example (no-grad passes), then release the reference model.

        Without a ``ref_model`` the reference is the policy as it is before training (so no copy is made).
        """
        ref = self.ref_model if self.ref_model is not None else self.model
        was_training = ref.training
        ref.eval()
        for data in (self.train_data, self.eval_data):
            if data is None or "ref_chosen_logps" in data[0] or "ref_logps" in data[0]:
                continue
            for start in range(0, len(data), self.config.batch_size):
                chunk = data.examples[start : start + self.config.batch_size]
                batch = self._batch(data, range(start, start + len(chunk)))
                cfg = self.config
                logps = reference_logps(ref, batch, cfg.spec.paired, cfg.allowed_token_ids, cfg.forward_mode)
                for key, values in logps.items():
                    for example, value in zip(chunk, values.tolist(), strict=True):
                        example[key] = value
        ref.train(was_training)
        self.ref_model = None  # the trainer no longer holds the reference model

    def train(self, resume_from_checkpoint=None) -> list[dict]:
        """Run the training; returns the metrics history (also in ``self.history``).

        ``resume_from_checkpoint``: a ``checkpoint-N`` directory written by this trainer (``save_steps``), or
        True for the latest intact one under ``output_dir``; the run continues from its step and data position.
        Before any step, ``output_dir`` is checked (:func:`~dpo_teach.trainers.checkpoints.check_output_dir`)
        and the checkpoint is verified and compared with this run's config and data.
        """
        cfg = self.config
        out, resume = self._output_and_resume(resume_from_checkpoint)
        seed_everything(cfg.seed)
        if cfg.precompute_ref_logps and cfg.spec.needs_reference:
            self.precompute_reference()
        plan = micro_batches(len(self.train_data), cfg.batch_size, cfg.epochs, cfg.seed)
        total = -(-len(plan) // cfg.grad_accum)
        distributed.check_micro_batches([len(idx) for _, idx in plan])
        optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        scheduler = warmup_scheduler(
            optimizer, cfg.warmup_steps, total, decay=cfg.lr_scheduler_type == "linear"
        )
        step, self.history = 0, []
        if resume is not None:
            step = self._resume(*resume, optimizer, scheduler)
        logger = MetricLogger(total, f"{cfg.loss_type} training", progress=cfg.progress, callback=self.callback,
                              history=self.history, initial=step, show=("loss", "rewards/accuracies"))  # fmt: skip
        self.model.train()
        try:
            while step < total:
                sums = self._accumulate(plan[step * cfg.grad_accum : (step + 1) * cfg.grad_accum])
                lr = scheduler.get_last_lr()[0]
                grad_norm = clip_and_step(self.model, optimizer, scheduler, cfg.max_grad_norm)
                check_grad_norm(grad_norm, step + 1, cfg.beta)
                step += 1
                entry = {
                    "step": step,
                    "epoch": step * cfg.grad_accum / (len(plan) / cfg.epochs),
                    **mean_metrics(distributed.sum_metrics(sums)),
                    "grad_norm": grad_norm,
                    "learning_rate": lr,
                    "lr": lr,
                }  # fmt: skip  (learning_rate: TRL's name; lr: chapter 06's)
                if (
                    self.eval_data is not None
                    and cfg.eval_steps
                    and (step % cfg.eval_steps == 0 or step == total)
                ):
                    entry.update(self.evaluate())
                logger.log(entry)
                if cfg.save_steps and step % cfg.save_steps == 0 and distributed.is_main():
                    self.save_checkpoint(out / f"checkpoint-{step}", optimizer, scheduler, step)
        finally:
            logger.close()
        self.model.eval()
        if out is not None and distributed.is_main():
            self.save_pretrained(out)
        return self.history

    def _output_and_resume(self, resume_from_checkpoint) -> tuple[Path | None, tuple[Path, dict] | None]:
        """The checked output folder (rank 0 only: it writes) and the verified checkpoint to resume, if any."""
        cfg = self.config
        out = None
        if distributed.is_main():
            out = checkpoints.prepare_output_dir(
                cfg.output_dir, resume_from_checkpoint, overwrite=cfg.overwrite_output_dir
            )
        where = out or cfg.output_dir and Path(cfg.output_dir)
        resume = checkpoints.checkpoint_to_resume(
            resume_from_checkpoint, where, self._comparable(), self.data_fingerprint
        )
        return out, resume

    def _accumulate(self, chunk) -> dict:
        """Forward and backward over one optimizer step's micro-batches ``chunk``; their metric totals."""
        n = sum(len(idx) for _, idx in chunk)
        sums: dict = {}
        for _, idx in chunk:
            idx, share = distributed.local_slice(idx, n)  # this process's pairs (all without torchrun)
            loss, metrics = self.compute_loss(self._batch(self.train_data, idx))
            (loss * share).backward()  # so the step's gradient is that of the mean over n pairs
            accumulate_metrics(sums, {"loss": (loss.detach() * len(idx), len(idx)), **metrics})
        return sums

    def _batch(self, data, idx) -> dict:
        return {k: v.to(self.device) for k, v in self.collate([data[i] for i in idx]).items()}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Metrics on ``eval_rows`` (the whole split, no gradient), TRL's names prefixed ``eval_``."""
        if self.eval_data is None:
            raise ValueError("evaluate() needs eval_rows; pass eval_rows=... to the trainer.")
        was_training = self.model.training
        self.model.eval()
        sums: dict = {}
        for start in range(0, len(self.eval_data), self.config.batch_size):
            idx = list(range(start, min(start + self.config.batch_size, len(self.eval_data))))
            loss, metrics = self.compute_loss(self._batch(self.eval_data, idx))
            accumulate_metrics(sums, {"loss": (loss * len(idx), len(idx)), **metrics})
        self.model.train(was_training)
        return {f"eval_{k}": v for k, v in mean_metrics(sums).items()}

    # ------------------------------------------------------------------ saving and resuming
    def save_checkpoint(self, path, optimizer, scheduler, step: int) -> Path:
        state = {
            "step": step,
            "position": step * self.config.grad_accum,
            "history": self.history,
            "config": self._comparable(),
            "data": self.data_fingerprint,
        }
        return checkpoints.save_checkpoint(
            path, model=self.model, optimizer=optimizer, scheduler=scheduler, state=state
        )

    def _resume(self, path, state, optimizer, scheduler) -> int:
        state = checkpoints.load_checkpoint(
            path, model=self.model, optimizer=optimizer, scheduler=scheduler, state=state
        )
        self.history[:] = state["history"]
        return state["step"]

    def _comparable(self) -> dict:
        return {k: v for k, v in self.config.to_dict().items() if k not in _NOT_COMPARED}

    def save_pretrained(self, path) -> None:
        """``model.save_pretrained`` + ``tokenizer.save_pretrained``: loads with ``AutoModelForCausalLM``."""
        self.model.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)


def train_dpo(
    model, tokenizer, rows, *, ref_model=None, eval_rows=None, callback=None, **config
) -> list[dict]:
    """Train ``model`` in place with :class:`DPOTrainer`; ``config`` are :class:`DPOConfig` fields (or TRL's
    names of them, or ``config=`` a :class:`DPOConfig` or ``trl.DPOConfig``).

    Returns the metrics history (one dict per optimizer step). Example: ``train_dpo(policy, tok, pairs,
    beta=0.5, lr=1e-3, epochs=3, precompute_ref_logps=True)``.
    """
    trainer = DPOTrainer(
        model, tokenizer, rows, ref_model=ref_model, eval_rows=eval_rows, callback=callback, **config
    )
    return trainer.train()
