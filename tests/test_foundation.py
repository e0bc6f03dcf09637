"""The package skeleton: device and precision policy, the seeding helper, the version."""

from __future__ import annotations

import importlib.metadata
import random

import numpy as np
import pytest
import torch

import dpo_teach
from dpo_teach.device import autocast, autocast_dtype, describe, get_device
from dpo_teach.seed import seed_everything


@pytest.fixture
def no_env_device(monkeypatch):
    monkeypatch.delenv("DPO_TEACH_DEVICE", raising=False)


# --- device ------------------------------------------------------------------------------------------------


def test_explicit_cpu(no_env_device):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")


def test_automatic_order_prefers_cuda_then_mps_then_cpu(no_env_device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device().type == "cpu"


def test_env_override_beats_an_available_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DPO_TEACH_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_explicit_argument_beats_env(monkeypatch):
    monkeypatch.setenv("DPO_TEACH_DEVICE", "no-such-device")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "", "xpu"])
def test_bad_device_string(no_env_device, bad):
    with pytest.raises(ValueError, match=r"device=.*use one of \('cpu', 'cuda', 'mps'\)"):
        get_device(bad)


def test_bad_env_device_names_the_variable(monkeypatch):
    monkeypatch.setenv("DPO_TEACH_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"DPO_TEACH_DEVICE='gpu'.*use one of"):
        get_device()


def test_cuda_requested_without_cuda(no_env_device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda'.*is False; use 'cpu'"):
        get_device("cuda")


def test_mps_requested_without_mps(no_env_device, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='mps'.*not available; use 'cpu'"):
        get_device("mps")


def test_device_of_wrong_type(no_env_device):
    with pytest.raises(TypeError, match=r"device must be a str such as 'cpu' or a torch.device, got int"):
        get_device(0)


def test_dtype_policy():
    assert autocast_dtype("cpu") == torch.float32
    assert autocast_dtype("mps") == torch.float32
    assert autocast_dtype("cuda") == torch.bfloat16


def test_autocast_is_a_no_op_on_cpu():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        out = a @ b
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a @ b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_is_bf16_on_cuda():
    a, b = torch.randn(4, 8, device="cuda"), torch.randn(8, 3, device="cuda")
    with autocast("cuda"):
        out = a @ b
    assert out.dtype == torch.bfloat16
    assert a.dtype == torch.float32  # weights and inputs stay float32; only the op runs in bf16


def test_describe_names_device_and_precision(no_env_device):
    line = describe("cpu")
    assert line.startswith("cpu (CPU, ") and line.endswith("forward in float32"), line


# --- seed --------------------------------------------------------------------------------------------------


def _draws(generator: torch.Generator):
    return (
        random.random(),
        np.random.rand(3).tolist(),  # noqa: NPY002 -- the legacy global RNG is what seed_everything seeds
        torch.rand(3).tolist(),
        torch.rand(3, generator=generator).tolist(),
    )


def test_same_seed_repeats_every_generator():
    first = _draws(seed_everything(123))
    second = _draws(seed_everything(123))
    assert first == second


def test_different_seeds_differ_in_every_generator():
    first = _draws(seed_everything(1))
    second = _draws(seed_everything(2))
    assert all(a != b for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("bad", ["0", 1.5, True, None])
def test_seed_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"seed must be an int, got .*; pass e.g. seed=0"):
        seed_everything(bad)


def test_seed_out_of_range():
    with pytest.raises(ValueError, match=r"seed=18446744073709551616 is out of range"):
        seed_everything(2**64)


# --- version -----------------------------------------------------------------------------------------------


def test_version_matches_installed_metadata():
    assert dpo_teach.__version__ == importlib.metadata.version("dpo_teach")
