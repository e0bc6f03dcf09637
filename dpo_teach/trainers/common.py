"""The pieces every trainer shares: batches, optimizer + warm-up, logging.

A training run here is a list of *micro-batches* fixed in advance by the seed (:func:`micro_batches`); an
optimizer step consumes ``grad_accum`` of them. The data position is therefore one integer (micro-batches
consumed), and a run resumed from a checkpoint replays exactly the batches the uninterrupted run would have seen.
Checkpoints, resuming and the output folder are in :mod:`dpo_teach.trainers.checkpoints`.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from dpo_teach._validate import check_positive, model_max_positions
from dpo_teach.device import get_device


def resolve_config(kind, config, overrides: dict, accepted: str | None = None):
    """A trainer's settings: ``config`` (an instance of the dataclass ``kind``) or ``kind(**overrides)``, not
    both; a ``TypeError`` that names the fix otherwise (``accepted``: how it names what ``config`` may be)."""
    if config is not None and overrides:
        raise TypeError(
            f"pass either config={kind.__name__}(...) or keyword options, not both (got {sorted(overrides)})."
        )
    cfg = config if config is not None else kind(**overrides)
    if type(cfg) is not kind:
        raise TypeError(f"config must be {accepted or 'a ' + kind.__name__}, got {type(cfg).__name__}.")
    return cfg


def check_fits(model, data, max_length) -> None:
    """Raise ``ValueError`` if a tokenised sequence (``data``: a :class:`dpo_teach.data.Tokenized`) is longer
    than the model's position table."""
    limit = model_max_positions(model)
    if limit is None:
        return
    fields = [k for k in data[0] if k.endswith("_ids") and k != "prompt_ids"]
    longest = max(len(e["prompt_ids"]) + max(len(e[f]) for f in fields) for e in data.examples)
    if longest > limit:
        raise ValueError(
            f"the longest tokenised sequence has {longest} tokens but the model accepts at most {limit} "
            f"positions; pass max_length≤{limit} (now max_length={max_length}) to truncate."
        )


#: names of float attributes that hold a dropout probability, on configs and on modules (``attention_dropout``
#: of Llama/Qwen2 attention, GPT-2's ``attn_pdrop``, ``hidden_dropout_prob``, ``classifier_dropout``, ...)
_DROPOUT_WORDS = ("dropout", "pdrop", "drop_prob", "drop_rate")


def _zero_dropout_floats(obj) -> None:
    for name, value in list(vars(obj).items()):
        if isinstance(value, float) and value > 0 and any(w in name.lower() for w in _DROPOUT_WORDS):
            setattr(obj, name, 0.0)


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off every form of dropout in ``model`` so that training and evaluation forwards agree.

    Three forms exist in ``transformers`` models: ``nn.Dropout`` (and its 1d/2d/3d/alpha variants) modules,
    whose ``p`` becomes 0; a float probability stored on a module and passed to the attention kernel in train
    mode (Llama's and Qwen2's ``self.attention_dropout``); and the same read from ``model.config`` at forward
    time (some architectures). All are set to 0, the config's too (so a saved model records dropout 0). With
    the reference a copy of the policy, the first DPO loss is then exactly ln 2.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        _zero_dropout_floats(module)
        config = getattr(module, "config", None)
        if config is not None and not isinstance(config, (dict, str)) and hasattr(config, "__dict__"):
            _zero_dropout_floats(config)
            for sub in ("text_config", "vision_config"):  # multimodal configs nest the LM's config
                if hasattr(getattr(config, sub, None), "__dict__"):
                    _zero_dropout_floats(getattr(config, sub))
    return model


def prepare_model(model: torch.nn.Module, device=None, train: bool = True) -> torch.nn.Module:
    """Move ``model`` to ``device`` (default :func:`get_device`), dropout off, in train or eval mode.

    ``requires_grad`` is set to ``train`` on every parameter: a reference frozen by an earlier run and then
    copied (``copy.deepcopy(ref)``) would otherwise train nothing, silently.
    """
    model.to(get_device(device))
    disable_dropout(model)
    model.train(train)
    model.requires_grad_(train)
    return model


def micro_batches(n_examples: int, batch_size: int, epochs: int, seed: int):
    """The whole run's micro-batches: a list of ``(epoch, [example indices])``, fixed by ``seed``.

    Epoch ``e`` is a permutation drawn from ``torch.Generator().manual_seed(seed + e)``; the last partial batch
    of an epoch is kept.
    """
    out = []
    for epoch in range(epochs):
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out += [(epoch, order[i : i + batch_size]) for i in range(0, n_examples, batch_size)]
    return out


def make_optimizer(model_or_params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad."""
    check_positive("lr", lr)
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else model_or_params
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)


def warmup_scheduler(optimizer, warmup_steps: int, total_steps: int | None = None, decay: bool = False):
    """Linear warm-up from 0 to the optimizer's lr over ``warmup_steps`` steps, then constant (the DPO paper's
    schedule), or with ``decay=True`` a linear decay to 0 at ``total_steps``.
    """
    check_positive("warmup_steps", warmup_steps, int, allow_zero=True)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if decay and total_steps:
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_and_step(model, optimizer, scheduler, max_grad_norm: float | None) -> float:
    """Clip the gradient norm (if ``max_grad_norm``), step optimizer and scheduler, zero grads; returns the
    total gradient norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    limit = max_grad_norm if max_grad_norm is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, limit)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


class MetricLogger:
    """History + progress bar + callback in one place.

    ``log(metrics)`` appends a dict to ``history``, updates the ``tqdm.auto`` bar (its postfix shows
    ``show`` keys), and calls ``callback(metrics)`` — e.g. to redraw a live plot in a notebook.
    """

    def __init__(
        self, total: int, desc: str, *, progress=True, callback=None, history=None, initial=0, show=()
    ):
        if callback is not None and not callable(callback):
            raise TypeError(
                f"callback must be callable (called with a metrics dict), got {type(callback).__name__}."
            )
        self.history = history if history is not None else []
        self.callback = callback
        self.show = show
        self.bar = tqdm(total=total, desc=desc, initial=initial, disable=not progress, leave=False)

    def log(self, metrics: dict) -> None:
        self.history.append(metrics)
        self.bar.update(1)
        if self.show:
            self.bar.set_postfix({k: f"{metrics[k]:.4g}" for k in self.show if k in metrics}, refresh=False)
        if self.callback is not None:
            self.callback(metrics)

    def close(self) -> None:
        self.bar.close()


def accumulate_metrics(sums: dict, metrics: dict) -> None:
    """Add per-example metric tensors (or ``(sum, count)`` pairs) into running ``[sum, count]`` totals, so that
    a step's metrics over several micro-batches are means over all its examples."""
    for key, value in metrics.items():
        total, count = value if isinstance(value, tuple) else (value.sum(), value.numel())
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] += float(total.sum()) if isinstance(total, torch.Tensor) else float(total)
        acc[1] += float(count.sum()) if isinstance(count, torch.Tensor) else count


def mean_metrics(sums: dict) -> dict:
    """The means of :func:`accumulate_metrics` totals (NaN for a metric that saw no example)."""
    return {k: (s / n if n else float("nan")) for k, (s, n) in sums.items()}
