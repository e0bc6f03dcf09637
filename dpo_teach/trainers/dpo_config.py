"""The settings of a DPO run: :class:`DPOConfig`, and TRL's names and ``trl.DPOConfig`` carried over to it.

``loss_type`` names an entry of :data:`dpo_teach.losses.LOSSES` (``"sigmoid"``, also ``"dpo"``, is the paper's
loss); the options a loss takes (``label_smoothing``, ``loss_kwargs``) are checked against what that entry
declares. TRL's configuration carries over: :meth:`DPOConfig.from_trl` converts a ``trl.DPOConfig`` (the
trainer also accepts one as ``config=``), TRL's field names (``learning_rate``, ``num_train_epochs``, …,
:data:`TRL_NAMES`) are accepted wherever a :class:`DPOConfig` is built, and
``transformers.HfArgumentParser(DPOConfig)`` parses command lines (with TRL's flag names too).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import warnings
from dataclasses import dataclass, field
from numbers import Real

import torch

from dpo_teach._validate import check_positive
from dpo_teach.losses import get_loss
from dpo_teach.prefix_sharing import FORWARD_MODES

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
        check_positive("beta", self.beta)
        for name in ("epochs", "batch_size", "grad_accum"):
            check_positive(name, getattr(self, name), int)
        check_positive("lr", self.lr)
        check_positive("warmup_steps", self.warmup_steps, int, allow_zero=True)
        if self.lr_scheduler_type not in ("constant", "linear"):
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r} must be 'constant' or 'linear'.")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("max_grad_norm", "eval_steps", "save_steps"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), Real if name == "max_grad_norm" else int)
        if not isinstance(self.overwrite_output_dir, bool):
            raise TypeError(f"overwrite_output_dir must be True or False, got {self.overwrite_output_dir!r}.")
        if self.save_steps is not None and self.output_dir is None:
            raise ValueError(
                f"save_steps={self.save_steps} writes checkpoints into output_dir, but output_dir is None; "
                "pass output_dir=... or drop save_steps."
            )
        if self.label_smoothing and not self.spec.label_smoothing:
            raise ValueError(
                f"label_smoothing applies to 'sigmoid' (cDPO) and 'robust', not {self.loss_type!r}."
            )
        self.loss_kwargs = _parse_loss_kwargs(self.loss_kwargs)
        if not isinstance(self.loss_kwargs, dict):
            raise TypeError(f"loss_kwargs must be a dict, got {type(self.loss_kwargs).__name__}.")
        unknown = set(self.loss_kwargs) - set(self.spec.options)
        if unknown:
            raise ValueError(
                f"loss_kwargs {sorted(unknown)} are not options of {self.loss_type!r}; it accepts "
                f"{sorted(self.spec.options)}."
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
