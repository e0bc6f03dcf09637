"""DPO — and every loss of the registry :data:`dpo_teach.losses.LOSSES` — as one short training loop.

A step, for a batch of preference pairs (x, y_w, y_l):

1. one concatenated forward of the policy over chosen and rejected → log π_θ(y_w|x), log π_θ(y_l|x) [B]
   (:func:`dpo_teach.logprobs.concatenated_forward`; length-averaged for ORPO/SimPO);
2. the same under ``torch.no_grad()`` for the frozen reference π_ref — or the values precomputed once before
   training (``precompute_ref_logps=True``, after which the reference model is released);
3. the loss, e.g. DPO's  L = −log σ(β [log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)]),
   averaged over the batch; the gradient is accumulated over ``grad_accum`` micro-batches, clipped to
   ``max_grad_norm``, and AdamW steps with a linear warm-up.

Metrics use TRL's names: ``loss``, ``rewards/chosen`` = β (log π_θ(y_w|x) − log π_ref(y_w|x)) (mean),
``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``,
``logits/chosen``, ``logits/rejected``, plus ``grad_norm``, ``learning_rate`` (also as ``lr``), ``epoch``,
``step``; evaluation adds the same names prefixed ``eval_``. KTO (unpaired) logs the rewards and log-probs of its desirable ("chosen") and
undesirable ("rejected") completions and ``kl``, its reference point. The loop pieces shared with the other
trainers (batches, warm-up, logging, checkpoints) are in :mod:`dpo_teach.trainers.common`.

TRL's configuration carries over: :meth:`DPOConfig.from_trl` converts a ``trl.DPOConfig`` (the trainer also
accepts one as ``config=``), TRL's field names (``learning_rate``, ``num_train_epochs``, …, :data:`TRL_NAMES`)
are accepted wherever a :class:`DPOConfig` is built, and ``transformers.HfArgumentParser(DPOConfig)`` parses
command lines (with TRL's flag names too).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpo_teach import _validate as V
from dpo_teach import data as D
from dpo_teach import distributed as DIST
from dpo_teach.losses import get_loss
from dpo_teach.prefix_sharing import FORWARD_MODES
from dpo_teach.seed import seed_everything
from dpo_teach.trainers import checkpoints as K
from dpo_teach.trainers import common as C
from dpo_teach.trainers.dpo_step import FILLED_IN, preference_step, reference_logps

#: config fields that may differ between an interrupted run and its resumption
_NOT_COMPARED = ("progress", "device", "output_dir", "save_steps", "overwrite_output_dir")

#: TRL's name of a field → ours; either name is accepted as a keyword (the other fields share TRL's names)
TRL_NAMES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "precompute_ref_log_probs": "precompute_ref_logps",
}


def _aliased(name: str, default=None, **kw):
    """A field that ``HfArgumentParser`` also reads under TRL's flag name (``--learning_rate`` for ``lr``)."""
    trl_name = {ours: theirs for theirs, ours in TRL_NAMES.items()}[name]
    return field(default=default, metadata={"aliases": [f"--{trl_name}"]}, **kw)


def _resolve_trl_names(kw: dict) -> dict:
    """``kw`` with TRL's field names replaced by ours; giving both names of one field is an error."""
    out = dict(kw)
    for theirs, ours in TRL_NAMES.items():
        if theirs in out:
            if ours in out:
                raise TypeError(
                    f"{ours}={out[ours]!r} and {theirs}={out[theirs]!r} name the same DPOConfig field (TRL calls "
                    f"{ours!r} {theirs!r}); pass only one of them."
                )
            out[ours] = out.pop(theirs)
    return out


def _accepts_trl_names(cls):
    """Let ``cls(...)`` (a dataclass) take TRL's field names as keyword aliases of its own."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kw):
        init(self, *args, **_resolve_trl_names(kw))

    cls.__init__ = __init__
    return cls


@_accepts_trl_names
@dataclass
class DPOConfig:
    """Everything a DPO run depends on. ``loss_type`` is a registry name ("sigmoid" is the paper's DPO).

    TRL's names (:data:`TRL_NAMES`, e.g. ``learning_rate`` for ``lr``) are accepted as keywords too;
    :meth:`from_trl` converts a whole ``trl.DPOConfig``.
    """

    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    # a dict, e.g. {"gamma": 1.0} for simpo; a JSON string (from a command line) is parsed, None means {}
    loss_kwargs: dict | str | None = field(default_factory=dict)
    lr: float = _aliased("lr", 1e-4)
    epochs: int = _aliased("epochs", 1)
    batch_size: int = _aliased("batch_size", 32)
    grad_accum: int = _aliased("grad_accum", 1)
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "constant"  # after warm-up: "constant" (the DPO paper) or "linear" decay to 0
    weight_decay: float = 0.0
    max_length: int | None = None
    max_prompt_length: int | None = None
    truncation_mode: str = "keep_end"
    precompute_ref_logps: bool = _aliased("precompute_ref_logps", False)
    allowed_token_ids: list[int] | None = None
    forward_mode: str = "auto"  # or "plain": logprobs.concatenated_forward, the full-logits path
    eval_steps: int | None = None
    save_steps: int | None = None  # write output_dir/checkpoint-N every save_steps steps (needs output_dir)
    output_dir: str | None = None  # the trained model is saved here; checked before training starts
    overwrite_output_dir: bool = False  # True: replace another run's model and checkpoints in output_dir
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        self.spec = get_loss(self.loss_type)
        if self.forward_mode not in FORWARD_MODES:
            raise ValueError(f"forward_mode={self.forward_mode!r} must be one of {FORWARD_MODES}.")
        C.check_positive("beta", self.beta)
        for name in ("epochs", "batch_size", "grad_accum"):
            C.check_positive(name, getattr(self, name), int)
        C.check_positive("lr", self.lr)
        C.check_positive("warmup_steps", self.warmup_steps, int, allow_zero=True)
        if self.lr_scheduler_type not in ("constant", "linear"):
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r} must be 'constant' or 'linear'.")
        C.check_positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("max_grad_norm", "eval_steps", "save_steps"):
            if getattr(self, name) is not None:
                C.check_positive(name, getattr(self, name), int if name != "max_grad_norm" else (int, float))
        if not isinstance(self.overwrite_output_dir, bool):
            raise TypeError(f"overwrite_output_dir must be True or False, got {self.overwrite_output_dir!r}.")
        if self.save_steps is not None and self.output_dir is None:
            raise ValueError(
                f"save_steps={self.save_steps} writes checkpoints into output_dir, but output_dir is None; "
                "pass output_dir=... or drop save_steps."
            )
        if self.label_smoothing and "label_smoothing" not in inspect.signature(self.spec.fn).parameters:
            raise ValueError(
                f"label_smoothing applies to 'sigmoid' (cDPO) and 'robust', not {self.loss_type!r}."
            )
        self.loss_kwargs = _parse_loss_kwargs(self.loss_kwargs)
        if not isinstance(self.loss_kwargs, dict):
            raise TypeError(f"loss_kwargs must be a dict, got {type(self.loss_kwargs).__name__}.")
        accepted = set(inspect.signature(self.spec.fn).parameters) - FILLED_IN
        unknown = set(self.loss_kwargs) - accepted
        if unknown:
            raise ValueError(
                f"loss_kwargs {sorted(unknown)} are not options of {self.loss_type!r}; it accepts {sorted(accepted)}."
            )
        if self.allowed_token_ids is not None:
            self.allowed_token_ids = [int(i) for i in torch.as_tensor(self.allowed_token_ids).tolist()]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_trl(cls, trl_config) -> DPOConfig:
        """The :class:`DPOConfig` of a ``trl.DPOConfig``: TRL's values (its defaults included, e.g.
        ``learning_rate=1e-6``, ``num_train_epochs=3``) under our names.

        A TRL field with no counterpart here that is not at TRL's default raises a ``ValueError`` naming it —
        training on without it would give another model than TRL would — unless it only concerns logging,
        reporting or data loading (:data:`_TRL_BOOKKEEPING`), which is ignored with a warning.
        """
        trl = _import_trl()
        if not isinstance(trl_config, trl.DPOConfig):
            raise TypeError(f"from_trl needs a trl.DPOConfig, got {type(trl_config).__name__}.")
        _check_trl_unsupported(trl_config)
        return cls(**_trl_values(trl_config))


def _parse_loss_kwargs(value):
    """``loss_kwargs`` as given, a JSON object string parsed (``HfArgumentParser`` passes a str), None → {}."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"loss_kwargs={value!r} is not JSON; pass a dict or a JSON object such as '{{\"gamma\": 1.0}}'."
            ) from err
    return value


#: TRL fields that do not change what is trained (logs, reports, data loading): ignored with a warning
_TRL_BOOKKEEPING = frozenset(
    {
        "report_to", "run_name", "logging_dir", "logging_strategy", "logging_first_step",
        "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node", "dataset_num_proc",
        "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
        "dataloader_prefetch_factor", "save_total_limit", "save_only_model",
    }
)  # fmt: skip

#: TRL fields read by _trl_values (mapped onto ours, or checked there)
_TRL_READ = frozenset(
    {
        *TRL_NAMES, "beta", "label_smoothing", "loss_type", "max_grad_norm", "warmup_steps", "lr_scheduler_type",
        "weight_decay", "max_length", "truncation_mode", "seed", "output_dir", "eval_strategy", "eval_steps",
        "save_strategy", "save_steps", "disable_tqdm", "use_cpu", "bf16", "fp16",
        "do_eval", "logging_steps",  # do_eval follows eval_strategy; logging_steps is eval_steps' default
    }
)  # fmt: skip


def _import_trl():
    try:
        import trl
    except ImportError as err:  # TRL is a test/book dependency only
        raise ImportError("DPOConfig.from_trl needs TRL: pip install trl.") from err
    return trl


def _is_trl_config(obj) -> bool:
    """True for a ``trl.DPOConfig`` (without importing TRL: an instance exists only if TRL is imported)."""
    trl = sys.modules.get("trl")
    return trl is not None and isinstance(obj, trl.DPOConfig)


def _trl_reference(trl_config):
    """A ``trl.DPOConfig`` at TRL's defaults, built on this machine's device settings (its ``__post_init__``
    resolves some defaults per machine, so the dataclass defaults alone would not compare)."""
    keep = ("output_dir", "use_cpu", "bf16", "fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return type(trl_config)(**{name: getattr(trl_config, name) for name in keep})


def _check_trl_unsupported(trl_config) -> None:
    """Raise (or, for bookkeeping fields, warn) naming the TRL fields set away from TRL's default that this
    trainer has no counterpart for."""
    reference = _trl_reference(trl_config)
    changed = sorted(
        f.name
        for f in dataclasses.fields(trl_config)
        if f.name not in _TRL_READ and getattr(trl_config, f.name) != getattr(reference, f.name)
    )
    ignored = [name for name in changed if name in _TRL_BOOKKEEPING]
    unsupported = [name for name in changed if name not in _TRL_BOOKKEEPING]
    if unsupported:
        raise ValueError(
            f"trl.DPOConfig fields {unsupported} have no counterpart in dpo_teach's DPOConfig and are not at TRL's "
            "default; leave them at their default (or build dpo_teach.DPOConfig directly)."
        )
    if ignored:
        warnings.warn(
            f"trl.DPOConfig fields {ignored} concern logging or data loading only; ignored.", stacklevel=3
        )


def _whole(name: str, value) -> int:
    """``value`` as an int when it is a whole number (TRL types epochs and warm-up as floats)."""
    if float(value) != int(value):
        raise ValueError(
            f"trl.DPOConfig {name}={value!r} must be a whole number here; pass e.g. {name}={int(value) or 1}."
        )
    return int(value)


def _strategy_steps(trl_config, kind: str) -> int | None:
    """``eval_steps``/``save_steps`` from TRL's ``eval_strategy``/``save_strategy``: None for "no", the steps
    for "steps" (evaluation defaults to ``logging_steps``, as in TRL); "epoch"/"best" have no counterpart."""
    strategy = str(
        getattr(getattr(trl_config, f"{kind}_strategy"), "value", getattr(trl_config, f"{kind}_strategy"))
    )
    if strategy == "no":
        return None
    if strategy != "steps":
        raise ValueError(
            f"trl.DPOConfig {kind}_strategy={strategy!r} has no counterpart here; use 'steps' or 'no'."
        )
    steps = getattr(trl_config, f"{kind}_steps")
    if kind == "eval" and steps is None:
        steps = trl_config.logging_steps
    return _whole(f"{kind}_steps", steps)


def _trl_values(trl_config) -> dict:
    """Our field values read off a ``trl.DPOConfig``."""
    t = trl_config
    if t.bf16 or t.fp16:
        raise ValueError(
            "trl.DPOConfig bf16/fp16: this trainer computes in the model's dtype; pass bf16=False, fp16=False."
        )
    if len(t.loss_type) != 1:
        raise ValueError(
            f"trl.DPOConfig loss_type={t.loss_type!r}: one loss only here; pass e.g. loss_type=['sigmoid']."
        )
    values = {ours: getattr(t, theirs) for theirs, ours in TRL_NAMES.items()}
    values.update({name: getattr(t, name) for name in ("beta", "label_smoothing", "weight_decay", "max_length",
                                                        "truncation_mode", "seed", "output_dir")})  # fmt: skip
    values["epochs"] = _whole("num_train_epochs", t.num_train_epochs)
    values.update(loss_type=t.loss_type[0], warmup_steps=_whole("warmup_steps", t.warmup_steps))
    values["lr_scheduler_type"] = getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type)
    values["max_grad_norm"] = t.max_grad_norm or None  # 0 or None: no clipping, in both
    values.update(eval_steps=_strategy_steps(t, "eval"), save_steps=_strategy_steps(t, "save"))
    values.update(progress=not t.disable_tqdm, device="cpu" if t.use_cpu else None)
    return values


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
        if config is not None and kw:
            raise TypeError(
                f"pass either config=DPOConfig(...) or keyword options, not both (got {sorted(kw)})."
            )
        self.config = config if config is not None else DPOConfig(**kw)
        if _is_trl_config(self.config):
            self.config = DPOConfig.from_trl(self.config)
        if not isinstance(self.config, DPOConfig):
            raise TypeError(
                f"config must be a DPOConfig (dpo_teach's, or a trl.DPOConfig), got {type(self.config).__name__}."
            )
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a transformers causal LM, got {type(model).__name__}.")
        V.check_trainer_inputs(
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
        self.data_fingerprint = K.data_fingerprint(self.train_data.examples)
        collator = D.PreferenceCollator if spec.paired else D.KTOCollator
        self.collate = collator(tokenizer, cfg.allowed_token_ids)
        if not spec.needs_reference and ref_model is not None:
            warnings.warn(f"{cfg.loss_type!r} needs no reference model; ref_model is ignored.", stacklevel=2)
        self.ref_model = ref_model if spec.needs_reference else None
        C.prepare_model(self.model, DIST.local_device(cfg.device), train=True)
        self.device = next(self.model.parameters()).device
        # under torchrun: the policy in DDP (rank 0's weights broadcast before the reference copy below)
        self.policy = DIST.wrap(self.model) if DIST.init(self.device) else self.model
        if spec.needs_reference and self.ref_model is None and not cfg.precompute_ref_logps:
            self.ref_model = copy.deepcopy(self.model)
        if self.ref_model is not None:
            C.prepare_model(self.ref_model, self.device, train=False)
        self.history: list[dict] = []

    def _prepare(self, rows) -> D.Tokenized:
        cfg = self.config
        kind = "preference" if cfg.spec.paired else "kto"
        raw = D.read_rows(rows)
        if kind == "kto" and raw and isinstance(raw[0], dict) and "chosen" in raw[0]:
            raw = D.unpair_preference_rows(raw)
        rows = D.load_rows(raw, kind)
        tokenize = D.tokenize_preference if kind == "preference" else D.tokenize_kto
        out = tokenize(
            rows,
            self.tokenizer,
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length,
            truncation_mode=cfg.truncation_mode,
        )
        C.check_fits(self.model, out, cfg.max_length)
        return out

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Mean loss over ``batch`` and per-example metrics (:func:`dpo_teach.trainers.dpo_step.preference_step`)."""
        return preference_step(self.policy, self.ref_model, batch, self.config)

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
        out = self._check_output_dir(resume_from_checkpoint) if DIST.is_main() else None  # rank 0 writes
        resume = self._find_resume(resume_from_checkpoint, out or cfg.output_dir and Path(cfg.output_dir))
        seed_everything(cfg.seed)
        if cfg.precompute_ref_logps and cfg.spec.needs_reference:
            self.precompute_reference()
        plan = C.micro_batches(len(self.train_data), cfg.batch_size, cfg.epochs, cfg.seed)
        total = -(-len(plan) // cfg.grad_accum)
        DIST.check_micro_batches([len(idx) for _, idx in plan])
        optimizer = C.make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        scheduler = C.warmup_scheduler(
            optimizer, cfg.warmup_steps, total, decay=cfg.lr_scheduler_type == "linear"
        )
        step, self.history = 0, []
        if resume is not None:
            step = self._resume(*resume, optimizer, scheduler)
        logger = C.MetricLogger(total, f"{cfg.loss_type} training", progress=cfg.progress, callback=self.callback,
                                history=self.history, initial=step, show=("loss", "rewards/accuracies"))  # fmt: skip
        per_epoch = len(plan) / cfg.epochs
        self.model.train()
        try:
            while step < total:
                chunk = plan[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
                n = sum(len(idx) for _, idx in chunk)
                sums: dict = {}
                for _, idx in chunk:
                    idx, share = DIST.local_slice(idx, n)  # this process's pairs (all without torchrun)
                    loss, metrics = self.compute_loss(self._batch(self.train_data, idx))
                    (loss * share).backward()  # so the step's gradient is that of the mean over n pairs
                    C.accumulate_metrics(sums, {"loss": (loss.detach() * len(idx), len(idx)), **metrics})
                lr = scheduler.get_last_lr()[0]
                grad_norm = C.clip_and_step(self.model, optimizer, scheduler, cfg.max_grad_norm)
                V.check_grad_norm(grad_norm, step + 1, cfg.beta)
                step += 1
                entry = {
                    "step": step,
                    "epoch": step * cfg.grad_accum / per_epoch,
                    **C.mean_metrics(DIST.sum_metrics(sums)),
                    "grad_norm": grad_norm,
                    "learning_rate": lr,  # TRL's name
                    "lr": lr,  # chapter 06 reads it
                }
                if (
                    self.eval_data is not None
                    and cfg.eval_steps
                    and (step % cfg.eval_steps == 0 or step == total)
                ):
                    entry.update(self.evaluate())
                logger.log(entry)
                if cfg.save_steps and step % cfg.save_steps == 0 and DIST.is_main():
                    self.save_checkpoint(out / f"checkpoint-{step}", optimizer, scheduler, step)
        finally:
            logger.close()
        self.model.eval()
        if out is not None and DIST.is_main():
            self.save_pretrained(out)
        return self.history

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
            C.accumulate_metrics(sums, {"loss": (loss * len(idx), len(idx)), **metrics})
        self.model.train(was_training)
        return {f"eval_{k}": v for k, v in C.mean_metrics(sums).items()}

    # ------------------------------------------------------------------ saving and resuming
    def save_checkpoint(self, path, optimizer, scheduler, step: int) -> Path:
        state = {
            "step": step,
            "position": step * self.config.grad_accum,
            "history": self.history,
            "config": self._comparable(),
            "data": self.data_fingerprint,
        }
        return K.save_checkpoint(
            path, model=self.model, optimizer=optimizer, scheduler=scheduler, state=state
        )

    def _check_output_dir(self, resume_from_checkpoint) -> Path | None:
        """``output_dir`` as a checked, writable ``Path`` (None without one), before anything trains."""
        cfg = self.config
        if resume_from_checkpoint is True and cfg.output_dir is None:
            raise ValueError(
                "resume_from_checkpoint=True resumes the latest checkpoint under output_dir, but output_dir is "
                "None; pass output_dir=... or the path of a checkpoint-N folder."
            )
        if cfg.output_dir is None:
            return None
        # a run may write into a folder that holds checkpoints only when it continues one of them
        into = resume_from_checkpoint is True or (
            bool(resume_from_checkpoint)
            and Path(resume_from_checkpoint).expanduser().resolve().parent
            == Path(cfg.output_dir).expanduser().resolve()
        )
        return K.check_output_dir(cfg.output_dir, overwrite=cfg.overwrite_output_dir, resuming=into)

    def _find_resume(self, resume_from_checkpoint, output_dir) -> tuple[Path, dict] | None:
        """The checkpoint to resume, verified and compared with this run's config and data: ``(path, state)``,
        or None for a fresh run."""
        if not resume_from_checkpoint:
            return None
        if resume_from_checkpoint is True:
            path, state = K.find_checkpoint(output_dir)
        else:
            path, state = Path(resume_from_checkpoint), K.read_checkpoint(resume_from_checkpoint)
        if state["config"] != self._comparable():
            now = self._comparable()
            changed = sorted(k for k in {*state["config"], *now} if state["config"].get(k) != now.get(k))
            raise ValueError(
                f"the checkpoint was written with different settings {changed}; resume with the same config."
            )
        if state["data"] != self.data_fingerprint:
            raise ValueError(
                f"checkpoint {str(path)!r} was trained on other data (the tokenised train_rows differ); resume "
                "with the same train_rows, tokenizer and truncation settings, or start a new run."
            )
        return path, state

    def _resume(self, path, state, optimizer, scheduler) -> int:
        state = K.load_checkpoint(
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
