"""dpo_teach.memory: bytes per parameter against the ZeRO paper, parameter counts against torch, activations."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from dpo_teach.logprobs import concatenated_forward
from dpo_teach.memory import (
    config_parameters,
    count_parameters,
    parameter_bytes,
    saved_tensor_bytes,
    sharded_memory,
    training_memory,
    training_memory_bytes,
)
from dpo_teach.models import tiny_gpt2

LLAMA2_7B = LlamaConfig(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, vocab_size=32000,
)  # fmt: skip


def test_mixed_precision_adam_is_zero_papers_16_bytes_per_parameter():
    # ZeRO (Rajbhandari et al., 2020), section 3.1: "2Ψ + 2Ψ + 12Ψ = 16Ψ bytes"; "a 7.5B model requires 120 GB"
    policy = training_memory(7.5e9, recipe="bf16_mixed", optimizer="adamw", reference="none")
    assert policy.total == 120 * 10**9
    assert (policy.weights, policy.gradients, policy.master_weights + policy.optimizer_states) == (
        2 * 7_500_000_000,
        2 * 7_500_000_000,
        12 * 7_500_000_000,
    )
    # the frozen reference adds its bf16 weights only: 2Ψ
    assert training_memory_bytes(7.5e9, recipe="bf16_mixed") - policy.total == 2 * 7_500_000_000


@pytest.mark.parametrize(
    ("recipe", "per_param"),
    [
        ("fp32", 4 + 4 + 8 + 4),
        ("bf16_autocast", 4 + 4 + 8 + 4),
        ("bf16_mixed", 2 + 2 + 4 + 8 + 2),
        ("bf16_pure", 2 + 2 + 4 + 2),
    ],
)
def test_bytes_per_parameter_by_recipe(recipe, per_param):
    assert training_memory_bytes(1000, recipe=recipe) == 1000 * per_param


def test_precomputed_reference_and_sgd_hold_less():
    live = training_memory(1000, recipe="fp32")
    assert live.reference_weights == 4000
    assert training_memory(1000, recipe="fp32", reference="precomputed").total == live.total - 4000
    assert training_memory(1000, recipe="fp32", optimizer="sgd").optimizer_states == 0
    with_act = training_memory(1000, recipe="fp32", activation_bytes=123)
    assert with_act.total == live.total + 123 and with_act.gb()["total"] == pytest.approx(
        with_act.total / 1e9
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_params": -1}, "n_params=-1 must be a positive number"),
        ({"n_params": True}, "n_params=True must be a positive number"),
        ({"n_params": 10, "recipe": "fp8"}, "recipe='fp8' must be one of"),
        ({"n_params": 10, "optimizer": "adam8bit"}, "optimizer='adam8bit' must be one of"),
        ({"n_params": 10, "reference": "cached"}, "reference='cached' must be one of"),
        ({"n_params": 10, "activation_bytes": -5}, "activation_bytes=-5 must be an int"),
    ],
)
def test_training_memory_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training_memory(**kwargs)


def test_zero_stages_reproduce_the_papers_figure_1():
    # ZeRO, Figure 1: Ψ = 7.5B, N_d = 64 GPUs, K = 12 → per GPU 120 GB (DDP), 31.4 (P_os), 16.6 (P_os+g), 1.9 GB
    psi, n = 7_500_000_000, 64
    per_gpu = {
        stage: sharded_memory(psi, n_gpus=n, stage=stage, reference="none").total for stage in range(4)
    }
    assert per_gpu == {
        0: 16 * psi,
        1: (2 + 2) * psi + 12 * psi // n,
        2: 2 * psi + (2 + 12) * psi // n,
        3: 16 * psi // n,
    }
    assert [round(per_gpu[s] / 1e9, 1) for s in range(4)] == [120.0, 31.4, 16.6, 1.9]


@pytest.mark.parametrize(("stage", "reference_bytes"), [(0, 2 * 10), (1, 2 * 10), (2, 2 * 10), (3, 2 * 4)])
def test_only_stage_3_shards_the_frozen_reference(stage, reference_bytes):
    # 10 parameters on 3 GPUs: a shard holds ⌈10/3⌉ = 4 of them; the bf16 reference is 2 bytes per parameter
    estimate = sharded_memory(10, n_gpus=3, stage=stage)
    assert estimate.reference_weights == reference_bytes
    full = training_memory(10)
    assert estimate.weights == (full.weights if stage < 3 else 2 * 4)
    assert estimate.gradients == (full.gradients if stage < 2 else 2 * 4)
    assert estimate.optimizer_states == (full.optimizer_states if stage < 1 else 8 * 4)


def test_one_gpu_is_the_unsharded_estimate():
    for stage in range(4):
        assert sharded_memory(1000, n_gpus=1, stage=stage, recipe="fp32") == training_memory(
            1000, recipe="fp32"
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_gpus": 0, "stage": 3}, "n_gpus=0 must be an int ≥ 1"),
        ({"n_gpus": 2.0, "stage": 3}, "n_gpus=2.0 must be an int ≥ 1"),
        ({"n_gpus": True, "stage": 3}, "n_gpus=True must be an int ≥ 1"),
        ({"n_gpus": 8, "stage": 4}, "stage=4 must be a ZeRO stage, one of"),
        ({"n_gpus": 8, "stage": True}, "stage=True must be a ZeRO stage"),
        ({"n_gpus": 8, "stage": 3, "recipe": "fp8"}, "recipe='fp8' must be one of"),
    ],
)
def test_sharded_memory_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sharded_memory(1000, **kwargs)


def test_parameter_counts_of_built_models_match_the_closed_forms():
    gpt2 = tiny_gpt2(300, n_layer=3, n_embd=32, n_head=4, n_positions=40)
    assert count_parameters(gpt2) == config_parameters(gpt2.config)
    assert count_parameters(gpt2) < sum(p.numel() for p in gpt2.state_dict().values())  # lm_head is tied
    llama_config = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    llama = AutoModelForCausalLM.from_config(llama_config)
    assert count_parameters(llama) == config_parameters(llama_config)


def test_published_sizes_on_the_meta_device():
    """GPT-2 small is 124,439,808 parameters and Llama-2-7B 6,738,415,616 (their model cards' 124M and 6.7B)."""
    for config, published in ((GPT2Config(), 124_439_808), (LLAMA2_7B, 6_738_415_616)):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert count_parameters(model) == config_parameters(config) == published


def test_config_parameters_unknown_architecture():
    with pytest.raises(ValueError, match="model_type='bert'"):
        config_parameters(type("C", (), {"model_type": "bert"})())


def test_parameter_bytes_follow_the_dtype():
    model = tiny_gpt2(100, n_embd=16, n_head=2)
    n = count_parameters(model)
    assert parameter_bytes(model) == 4 * n
    assert parameter_bytes(model.to(torch.bfloat16)) == 2 * n


def test_saved_tensor_bytes_of_simple_layers():
    linear = torch.nn.Linear(10, 20)
    x = torch.randn(5, 10)
    params = list(linear.parameters())
    assert saved_tensor_bytes(lambda: linear(x), exclude=params) == 5 * 10 * 4  # the input, for dW = x^T g
    assert saved_tensor_bytes(lambda: torch.relu(linear(x)), exclude=params) == (5 * 10 + 5 * 20) * 4
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: linear(x)) == 0


def _batch(b, t=24, vocab=100):
    ids = torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(b))
    labels = ids.masked_fill(torch.arange(t) < t // 2, -100)
    tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {f"{side}_{k}": v for side in ("chosen", "rejected") for k, v in tensors.items()}


def test_dpo_activations_grow_linearly_with_the_batch_and_the_reference_saves_none():
    model = tiny_gpt2(100, n_embd=32, n_head=4)
    measure = lambda b: saved_tensor_bytes(
        lambda: concatenated_forward(model, _batch(b)).chosen_logps, exclude=list(model.parameters())
    )
    small, large = measure(4), measure(8)
    assert small > 0 and large / small == pytest.approx(2.0, rel=0.01)
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: concatenated_forward(model, _batch(8))) == 0
