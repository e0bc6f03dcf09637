"""The pieces every trainer shares: batches, optimizer + warm-up, logging, checkpoint/resume.

A training run here is a list of *micro-batches* fixed in advance by the seed (:func:`micro_batches`); an
optimizer step consumes ``grad_accum`` of them. The data position is therefore one integer (micro-batches
consumed), and a run resumed from a checkpoint replays exactly the batches the uninterrupted run would have seen.
A checkpoint (:func:`save_checkpoint`) is a directory: the model by ``save_pretrained`` (safetensors), the
optimizer and scheduler by ``torch.save`` (``optimizer.pt``), and ``trainer_state.json`` with the step, the
data position, the metrics history so far, the RNG states and the run's config.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dpo_teach.device import get_device

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.pt"


def check_positive(name: str, value, kind=(int, float), allow_zero: bool = False) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``value`` is a positive number of ``kind``."""
    if isinstance(value, bool) or not isinstance(value, kind):
        wanted = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be of type {wanted}, got {type(value).__name__} {value!r}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be finite and {bound}.")


def check_fits(model, data, max_length) -> None:
    """Raise ``ValueError`` if a tokenised sequence (``data``: a :class:`dpo_teach.data.Tokenized`) is longer
    than the model's position table."""
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if limit is None:
        return
    fields = [k for k in data[0] if k.endswith("_ids") and k != "prompt_ids"]
    longest = max(len(e["prompt_ids"]) + max(len(e[f]) for f in fields) for e in data.examples)
    if longest > limit:
        raise ValueError(
            f"the longest tokenised sequence has {longest} tokens but the model accepts at most {limit} "
            f"positions; pass max_length≤{limit} (now max_length={max_length}) to truncate."
        )


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set ``p = 0`` in every ``nn.Dropout`` so that training and evaluation forwards agree."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
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


def micro_batches(n_examples: int, batch_size: int, epochs: int, seed: int, shuffle: bool = True):
    """The whole run's micro-batches: a list of ``(epoch, [example indices])``, fixed by ``seed``.

    Epoch ``e`` is a permutation drawn from ``torch.Generator().manual_seed(seed + e)``; the last partial batch
    of an epoch is kept.
    """
    out = []
    for epoch in range(epochs):
        if shuffle:
            order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        else:
            order = list(range(n_examples))
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


def _encode_tensor(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_tensor(s: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """The RNG states (Python, NumPy, torch CPU/CUDA, and ``generator``) as a JSON-serialisable dict."""
    np_state = np.random.get_state()  # noqa: NPY002 (seed_everything seeds the legacy global state)
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": _encode_tensor(torch.get_rng_state()),
        "cuda": [_encode_tensor(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }
    if generator is not None:
        state["generator"] = _encode_tensor(generator.get_state())
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(  # noqa: NPY002
        (state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:])
    )
    torch.set_rng_state(_decode_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_tensor(s) for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(_decode_tensor(state["generator"]))


def save_checkpoint(path, *, model, optimizer, scheduler, state: dict, generator=None) -> Path:
    """Write a resumable checkpoint directory at ``path``.

    ``state`` must be JSON-serialisable; by convention it holds ``step``, ``position`` (micro-batches consumed),
    ``history`` and ``config``. The RNG states are added to it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path / OPTIM_FILE)
    (path / STATE_FILE).write_text(json.dumps({**state, "rng": rng_state(generator)}), encoding="utf-8")
    return path


def load_checkpoint(path, *, model, optimizer, scheduler, generator=None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (in place) and restore the
    RNG states; returns the ``state`` dict (``step``, ``position``, ``history``, ``config``, ...)."""
    path = Path(path)
    if not (path / STATE_FILE).exists():
        raise ValueError(
            f"resume_from_checkpoint={str(path)!r} holds no {STATE_FILE}; pass a checkpoint-N directory."
        )
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    weights = {}
    for shard in sorted(path.glob("model*.safetensors")):  # one file, or shards of a large model
        weights.update(load_file(shard, device=str(device)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # save_pretrained drops tied weights (e.g. lm_head tied to the embeddings); only those may be missing
    if unexpected or not _only_tied(model, missing):
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the model: missing {missing}, unexpected {unexpected}."
        )
    saved = torch.load(path / OPTIM_FILE, weights_only=False, map_location=device)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    set_rng_state(state.pop("rng"), generator)
    return state


def _only_tied(model, missing) -> bool:
    """True when every missing key is a parameter that shares storage with a loaded one (tied weights)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in params if k not in missing}
    return all(k in params and params[k].data_ptr() in loaded for k in missing)


def latest_checkpoint(output_dir) -> Path | None:
    """The ``checkpoint-N`` directory with the largest N under ``output_dir`` (None if there is none)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).exists()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None
