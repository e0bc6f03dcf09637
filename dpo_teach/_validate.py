"""Input checks shared by :mod:`dpo_teach.losses`, :mod:`dpo_teach.theory` and :mod:`dpo_teach.logprobs`.

Each check raises a ``TypeError`` or ``ValueError`` whose message names the argument and says how to fix it,
so that a student who passes a list, a NaN or a negative β learns what went wrong from the message alone.
"""

from __future__ import annotations

import math
import tempfile
from numbers import Real
from pathlib import Path

import torch


def check_tensor(name: str, value, *, floating: bool = True) -> torch.Tensor:
    """Return ``value`` if it is a tensor (of a floating dtype when ``floating``), else raise ``TypeError``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; "
            "wrap it with torch.tensor(..., dtype=torch.float32)."
        )
    if floating and not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype, got {value.dtype}; convert it with {name}.float()."
        )
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``value`` holds a NaN or ±inf (a log-prob of -inf: a zero-probability response)."""
    if not bool(torch.isfinite(value).all()):
        bad = "NaN" if bool(torch.isnan(value).any()) else "inf"
        raise ValueError(
            f"{name} contains {bad}; every entry must be finite (a log-prob of -inf means probability 0 - "
            "check the masking and the inputs that produced it)."
        )
    return value


def check_float_tensors(**tensors: torch.Tensor) -> None:
    """Check that every keyword argument is a finite floating tensor and that all have one shape."""
    shapes = {}
    for name, value in tensors.items():
        check_finite(name, check_tensor(name, value))
        shapes[name] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}{list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"shapes differ: {listed}; pass one value per example, all of the same shape.")


def check_preference_logps(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
) -> None:
    """The four log-prob tensors of a preference pair: finite floating tensors of one shape."""
    check_float_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )


def check_logps(name: str, value) -> torch.Tensor:
    """Return ``value`` if it is a floating tensor of log-probs: finite or -inf (probability 0), never NaN/+inf."""
    check_tensor(name, value)
    if bool(torch.isnan(value).any()) or bool((value == float("inf")).any()):
        raise ValueError(f"{name} contains NaN or +inf; log-probs must be finite or -inf (probability 0).")
    return value


def check_normalised(name: str, value) -> torch.Tensor:
    """Return ``value`` if it holds log-probs whose exponentials sum to 1 (±1e-4) over the last dimension."""
    check_logps(name, value)
    total = torch.logsumexp(value.double(), dim=-1)
    if bool((total.abs() > 1e-4).any()):
        raise ValueError(
            f"{name} is not normalised over the last dimension (log-sum-exp = {total.abs().max().item():.3g}, "
            "should be 0); pass log-probabilities, e.g. torch.log_softmax(logits, dim=-1)."
        )
    return value


def is_int(value) -> bool:
    """True for an ``int`` that is not a ``bool`` (Python counts ``True`` as the int 1; no count here is a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive(name: str, value, kind=Real, *, allow_zero: bool = False):
    """Return ``value`` if it is a finite number > 0 (≥ 0 with ``allow_zero``), else raise naming ``name``.

    ``kind``: ``Real`` (any real number; returned as a float: β, τ, learning rates, weights) or ``int`` (a
    count or a step number; returned as it is). A bool is never accepted, whatever ``kind``.
    """
    integer = kind is int
    bound = ">= 0" if allow_zero else "> 0"
    example = ("0" if allow_zero else "1") if integer else ("0.0" if allow_zero else "0.1")
    wanted = ("an int" if integer else "a number") + (f" {bound}" if allow_zero else "")
    if not allow_zero:
        wanted = "a positive int" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, int if integer else Real):
        raise TypeError(
            f"{name} must be {wanted}, got {type(value).__name__} {value!r}; pass e.g. {name}={example}."
        )
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        what = "an int" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {bound}, got {value!r}; pass e.g. {name}={example}.")
    return value if integer else float(value)


def check_nonnegative(name: str, value) -> float:
    """:func:`check_positive` with 0 allowed: a finite real number ≥ 0 as a float (margins such as SimPO's γ)."""
    return check_positive(name, value, allow_zero=True)


def check_label_smoothing(value) -> float:
    """Return ε as a float if 0 ≤ ε < 0.5 (the probability that a preference label is flipped)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"label_smoothing must be a number in [0, 0.5), got {type(value).__name__}.")
    value = float(value)
    if not (0.0 <= value < 0.5):
        raise ValueError(
            f"label_smoothing must be in [0, 0.5), got {value}: it is the probability that a label is flipped, "
            "and at 0.5 the labels carry no information. Use 0.0 for plain DPO."
        )
    return value


# ---------------------------------------------------------------- models, tokenizers, token ids
# The trainers' entry points (DPO, SFT, reward model, PPO) call these before any work is done, so that a
# mistake in the arguments is reported in the arguments' names and not as a traceback from deep inside a model.


def check_tokenizer(tokenizer, name: str = "tokenizer"):
    """Return ``tokenizer`` if it can encode text (a ``transformers`` tokenizer), else raise ``TypeError``.

    A Hub name or a path passed where the tokenizer object belongs is the usual mistake.
    """
    if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
        raise TypeError(
            f"{name} must be a tokenizer object, got the {type(tokenizer).__name__} {str(tokenizer)!r}; load it "
            "first, e.g. AutoTokenizer.from_pretrained(path) or model, tokenizer = "
            "dpo_teach.models.load_causal_lm(path)."
        )
    if not callable(tokenizer) or not hasattr(tokenizer, "eos_token_id"):
        raise TypeError(
            f"{name} must be a transformers tokenizer (callable, with eos_token_id), got "
            f"{type(tokenizer).__name__}; pass the tokenizer that belongs to the model."
        )
    return tokenizer


def model_vocab_size(model) -> int | None:
    """The number of rows of the model's output (LM head) or, failing that, input embedding; None if unknown."""
    for getter in ("get_output_embeddings", "get_input_embeddings"):
        layer = getattr(model, getter, lambda: None)()
        weight = getattr(layer, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            return int(weight.shape[0])
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def check_vocab(model, tokenizer) -> None:
    """Raise ``ValueError`` if the tokenizer can produce ids the model has no embedding for."""
    vocab = model_vocab_size(model)
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has only {vocab}: ids "
            f"≥ {vocab} would index past the embedding. Pass the tokenizer the model was built with, or call "
            "model.resize_token_embeddings(len(tokenizer)) before training."
        )


def check_reference(model, ref_model, name: str = "ref_model") -> None:
    """Raise ``ValueError`` if the reference model is the policy object itself (it would move with the policy)."""
    if ref_model is not None and ref_model is model:
        raise ValueError(
            f"{name} is the same object as the model being trained, so π_ref would change at every step and "
            f"the KL anchor would vanish; pass {name}=copy.deepcopy(model) (before training) or leave {name}=None "
            "for a frozen copy."
        )


def check_token_ids(name: str, ids, vocab_size: int | None, *, allow_empty: bool = False) -> list[int]:
    """Return ``ids`` (a list/tuple/1-D tensor of ints) as a list after checking it is non-empty, duplicate-free
    and inside ``[0, vocab_size)``; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(
                f"{name} must be a 1-D tensor of integer token ids, got {ids.dtype} {list(ids.shape)}."
            )
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of int token ids, got {type(ids).__name__}; pass e.g. world.allowed_token_ids."
        )
    if not all(is_int(i) for i in ids):
        raise TypeError(f"{name} must hold only int token ids, got {ids!r}.")
    if not ids and not allow_empty:
        raise ValueError(
            f"{name} is empty, so no token could ever be scored or sampled; pass the world's alphabet "
            "(world.allowed_token_ids) or None for the full vocabulary."
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} contains repeated ids; list each allowed token once.")
    if vocab_size is not None:
        outside = sorted({i for i in ids if not 0 <= i < vocab_size})
        if outside:
            raise ValueError(
                f"{name} has ids {outside[:10]} outside the model's vocabulary [0, {vocab_size}); pass ids of "
                "this model's tokenizer (tokenizer.convert_tokens_to_ids(...))."
            )
    return list(ids)


def check_token_id(name: str, value, vocab_size: int | None) -> int:
    """Return ``value`` if it is an int token id inside ``[0, vocab_size)`` (e.g. PPO's ``stop_token_id``)."""
    if not is_int(value):
        raise TypeError(
            f"{name} must be an int token id, got {type(value).__name__} {value!r}; use "
            f"tokenizer.convert_tokens_to_ids(word)."
        )
    if vocab_size is not None and not 0 <= value < vocab_size:
        raise ValueError(
            f"{name}={value} is outside the model's vocabulary [0, {vocab_size}); use an id of this model's "
            "tokenizer, e.g. tokenizer.eos_token_id."
        )
    return value


def check_trainer_inputs(model, tokenizer, *, ref_model=None, allowed_token_ids=None) -> None:
    """The checks every trainer's entry point runs on its model, tokenizer, reference and alphabet."""
    check_tokenizer(tokenizer)
    check_vocab(model, tokenizer)
    check_reference(model, ref_model)
    if allowed_token_ids is not None:
        check_token_ids("allowed_token_ids", allowed_token_ids, model_vocab_size(model))


def check_grad_norm(grad_norm: float, step: int, beta: float | None = None) -> None:
    """Raise ``ValueError`` when a step's gradient norm is inf or NaN: clipping then zeroes the update (or fills
    the weights with NaN), and training would silently never move."""
    if math.isfinite(grad_norm):
        return
    hint = (
        f"with beta={beta:g} the DPO gradient, which is proportional to β, overflows float32; use a smaller "
        "beta (DPO uses 0.01-1)"
        if beta is not None and beta > 1e3
        else "check the inputs for huge values and lower the learning rate"
    )
    raise ValueError(
        f"the gradient norm at step {step} is {grad_norm}; the update would be zeroed by clipping and the model "
        f"would not move - {hint}."
    )


def model_max_positions(model) -> int | None:
    """The length of the model's position table (``n_positions`` or ``max_position_embeddings``), None if the
    config states none."""
    config = getattr(model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) else None


def check_writable(what: str, folder: Path, fix: str) -> Path:
    """Create ``folder`` if needed and write a probe file into it; ``ValueError`` naming ``what`` and ``fix`` if
    that fails (a file in the way, no permission, a read-only disk). Run it *before* work whose result would
    otherwise be lost (a cache entry, a training run's output folder)."""
    folder = Path(folder)
    for place in (folder, *folder.parents):  # the nearest part of the path that exists must be a folder
        if place.exists():
            if not place.is_dir():
                where = "is an existing file" if place == folder else f"lies under {str(place)!r}, a file"
                raise ValueError(f"the {what} {str(folder)!r} is not writable: it {where}; {fix}.")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"the {what} {str(folder)!r} is not writable: it cannot be written ({type(err).__name__}: "
            f"{err.strerror or err}); {fix}."
        ) from None
    return folder
