"""The memory arithmetic of DPO training: what each parameter costs, and what the reference model adds.

Training holds, per parameter of the policy (the *model states* of Rajbhandari et al., 2020, "ZeRO: Memory
Optimizations Toward Training Trillion Parameter Models"):

==================  =======  ======  ==========  ===============  ==========
recipe              weights  grads   fp32 copy   Adam (m and v)   reference
==================  =======  ======  ==========  ===============  ==========
``fp32``            4        4       0           8                4
``bf16_autocast``   4        4       0           8                4
``bf16_mixed``      2        2       4           8                2
``bf16_pure``       2        2       0           4                2
==================  =======  ======  ==========  ===============  ==========

``bf16_autocast`` is this book's CUDA policy (float32 weights, forward matmuls in bf16): the *states* cost what
fp32 costs, the saving is in activations and speed. ``bf16_mixed`` is ZeRO's mixed precision (16-bit weights and
gradients, a float32 master copy that the optimizer updates): 16 bytes per parameter, 2 + 2 + 12.
The frozen reference model needs only its weights — no gradients, no optimizer, and no activations (its forward
runs under ``torch.no_grad()``, so nothing is saved for a backward) — and with precomputed reference log-probs
(``DPOConfig(precompute_ref_logps=True)``) not even those. Activations come on top and grow with
batch × length; :func:`saved_tensor_bytes` measures them.

On N data-parallel GPUs, plain DDP holds all of it on every GPU. ZeRO splits it instead (:func:`sharded_memory`):
stage 1 the optimizer states (master copy and Adam's moments), stage 2 also the gradients, stage 3 also the
weights — PyTorch's FSDP with full sharding is stage 3. The frozen reference has no gradients or optimizer states,
so only stage 3 shards it (as TRL does: under ZeRO-3 it wraps the reference too, under stages 1–2 it keeps a whole
copy per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from numbers import Real

import torch

from dpo_teach._validate import is_int

#: bytes per parameter: (weights, gradients, float32 master copy, one optimizer state, reference weights)
RECIPES = {
    "fp32": (4, 4, 0, 4, 4),
    "bf16_autocast": (4, 4, 0, 4, 4),
    "bf16_mixed": (2, 2, 4, 4, 2),
    "bf16_pure": (2, 2, 0, 2, 2),
}
#: optimizer states kept per parameter
OPTIMIZER_STATES = {"adamw": 2, "sgd": 0}
REFERENCE_MODES = ("live", "precomputed", "none")
#: ZeRO stage → the fields of :class:`MemoryEstimate` it splits over the GPUs (0: plain DDP, nothing split)
ZERO_SHARDED = {
    0: (),
    1: ("master_weights", "optimizer_states"),
    2: ("master_weights", "optimizer_states", "gradients"),
    3: ("master_weights", "optimizer_states", "gradients", "weights", "reference_weights"),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes held during training, by kind; ``total`` is their sum."""

    weights: int
    gradients: int
    master_weights: int
    optimizer_states: int
    reference_weights: int
    activations: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def gb(self) -> dict[str, float]:
        """Every field and the total in GB (10⁹ bytes)."""
        return {**{f.name: getattr(self, f.name) / 1e9 for f in fields(self)}, "total": self.total / 1e9}


def training_memory(
    n_params,
    *,
    recipe: str = "bf16_mixed",
    optimizer: str = "adamw",
    reference: str = "live",
    activation_bytes: int = 0,
) -> MemoryEstimate:
    """The memory of DPO-training a policy with ``n_params`` parameters (bytes, by kind).

    weights + gradients + master copy + optimizer states = n_params · (w + g + m + k·s), plus the reference
    model's weights n_params · r when ``reference="live"`` (0 for ``"precomputed"`` log-probs or ``"none"``,
    e.g. SFT, ORPO, SimPO), plus ``activation_bytes``. (w, g, m, s, r) come from :data:`RECIPES[recipe]`,
    k from :data:`OPTIMIZER_STATES[optimizer]`.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, Real) or not n_params > 0:
        raise ValueError(f"n_params={n_params!r} must be a positive number (e.g. 7e9 for a 7B model).")
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} must be one of {sorted(RECIPES)}.")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r} must be one of {sorted(OPTIMIZER_STATES)}.")
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference={reference!r} must be one of {REFERENCE_MODES}.")
    if not is_int(activation_bytes) or activation_bytes < 0:
        raise ValueError(f"activation_bytes={activation_bytes!r} must be an int ≥ 0.")
    w, g, m, s, r = RECIPES[recipe]
    n = int(round(n_params))
    return MemoryEstimate(
        weights=n * w,
        gradients=n * g,
        master_weights=n * m,
        optimizer_states=n * s * OPTIMIZER_STATES[optimizer],
        reference_weights=n * r if reference == "live" else 0,
        activations=activation_bytes,
    )


def training_memory_bytes(n_params, **options) -> int:
    """:func:`training_memory` (same options) → the total in bytes."""
    return training_memory(n_params, **options).total


def sharded_memory(n_params, *, n_gpus: int, stage: int, **options) -> MemoryEstimate:
    """The model states one GPU holds when ``n_gpus`` GPUs train together with ZeRO stage ``stage`` (bytes).

    A field of :func:`training_memory` (same ``options``) that the stage splits, :data:`ZERO_SHARDED[stage]`,
    costs bytes-per-parameter · ⌈n_params / N⌉ per GPU; the others are whole on every GPU. E.g. bf16 mixed
    precision with Adam, live reference, Ψ parameters: stage 0 (DDP) 18Ψ, stage 1 (2 + 2 + 2)Ψ + 12Ψ/N, stage 2
    (2 + 2)Ψ + 14Ψ/N, stage 3 18Ψ/N. ``activation_bytes`` (per GPU) is added unsplit.
    """
    if not is_int(n_gpus) or n_gpus < 1:
        raise ValueError(f"n_gpus={n_gpus!r} must be an int ≥ 1 (the number of data-parallel GPUs).")
    if not is_int(stage) or stage not in ZERO_SHARDED:
        raise ValueError(
            f"stage={stage!r} must be a ZeRO stage, one of {sorted(ZERO_SHARDED)} (0: plain DDP)."
        )
    full = training_memory(n_params, **options)
    n = int(round(n_params))
    per_gpu = -(-n // n_gpus)  # parameters in one GPU's shard: ⌈n / N⌉ (the last shard is padded)
    split = {name: getattr(full, name) // n * per_gpu for name in ZERO_SHARDED[stage]}
    return replace(full, **split)


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters of ``model``, each tensor counted once (GPT-2 ties ``lm_head`` to the token embedding)."""
    return sum(p.numel() for p in model.parameters())  # parameters() already skips tied duplicates


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s parameters in their current dtypes (tied tensors counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def config_parameters(config) -> int:
    """The parameter count of a GPT-2 or Llama config, in closed form (no model is built).

    GPT-2: (V + P)·d + L·(12d² + 13d) + 2d (the output layer is tied to the token embedding).
    Llama: 2·V·d (untied) + L·(2d² + 2d·d_kv + 3d·d_ff + 2d) + d, with d_kv = d · n_kv_heads / n_heads.
    """
    kind = getattr(config, "model_type", None)
    if kind == "gpt2":
        d, n_layers = config.n_embd, config.n_layer
        return (config.vocab_size + config.n_positions) * d + n_layers * (12 * d * d + 13 * d) + 2 * d
    if kind == "llama":
        d, n_layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
        d_kv = d * config.num_key_value_heads // config.num_attention_heads
        embeddings = config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
        return embeddings + n_layers * (2 * d * d + 2 * d * d_kv + 3 * d * ff + 2 * d) + d
    raise ValueError(f"config_parameters knows 'gpt2' and 'llama' configs, got model_type={kind!r}.")


def saved_tensor_bytes(fn, *, exclude=()) -> int:
    """Run ``fn()`` and return the bytes of the tensors autograd saves for the backward pass — the activations.

    Each storage is counted once (views share it); storages of the tensors in ``exclude`` (e.g. the model's
    parameters, which a matmul saves but which are held anyway) are not counted. Under ``torch.no_grad()``
    nothing is saved: the answer is 0.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}
    alive = []  # hold every saved tensor until the end, so that no freed address is reused and missed

    def pack(tensor):
        storage = tensor.untyped_storage()
        alive.append(tensor)
        if storage.data_ptr() not in excluded:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(seen.values())
