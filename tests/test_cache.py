"""dpo_teach.cache: train once, load afterwards; atomic writes; corrupt entries detected and rebuilt."""

import json
import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import dpo_teach.cache as cache
from dpo_teach import theory
from dpo_teach.cache import cache_path, reference_model
from dpo_teach.worlds import SequenceWorld


def small_world(**kwargs):
    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=3, **kwargs)
    world.sft_config = {**world.sft_config, "n_rows": 64}
    return world


class CountingTrainer:
    """A stand-in for train_sft: counts its calls and moves the weights deterministically (by ``seed``)."""

    def __init__(self):
        self.calls = 0

    def __call__(
        self, model, tokenizer, rows, *, allowed_token_ids=None, seed=0, device=None, progress=True, **sft
    ):
        self.calls += 1
        assert (
            len(rows) == 64 and device == "cpu" and set(sft) == {"epochs", "batch_size", "lr", "warmup_steps"}
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
        return [{"step": 1, "loss": 1.0}]


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TEACH_CACHE", str(tmp_path))
    return tmp_path


def test_second_call_loads_instead_of_training(env):
    world, train = small_world(), CountingTrainer()
    model, tok = reference_model(world, device="cpu", progress=False, train_fn=train)
    again, _ = reference_model(world, device="cpu", progress=False, train_fn=train)
    assert train.calls == 1
    assert same_weights(weights(model), weights(again)) and not again.training and tok is world.tokenizer
    entry = cache_path(world, train_fn=train)
    assert entry.parent == env and {
        "manifest.json",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
    } <= {p.name for p in entry.iterdir()}
    # a plain-transformers reader can load the checkpoint, and it is the trained π_ref
    plain = AutoModelForCausalLM.from_pretrained(entry)
    assert same_weights(weights(plain), weights(model))
    assert AutoTokenizer.from_pretrained(entry)("p1 : a b")["input_ids"] == tok("p1 : a b")["input_ids"]
    torch.testing.assert_close(world.logprobs(plain), world.logprobs(model), atol=0, rtol=0)


def test_cache_location(tmp_path, monkeypatch):
    world, train = small_world(), CountingTrainer()
    monkeypatch.delenv("DPO_TEACH_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path(world, train_fn=train).parent == tmp_path / "home" / ".cache" / "dpo_teach"
    monkeypatch.setenv("DPO_TEACH_CACHE", str(tmp_path / "env"))
    assert cache_path(world, train_fn=train).parent == tmp_path / "env"
    assert cache_path(world, tmp_path / "arg", train_fn=train).parent == tmp_path / "arg"


def test_key_depends_on_world_settings_version_and_trainer(env, monkeypatch):
    world, train = small_world(), CountingTrainer()
    base = cache_path(world, train_fn=train)
    assert cache_path(small_world(), train_fn=train) == base  # same settings → same entry
    assert cache_path(small_world(seed=1), train_fn=train) != base
    changed = small_world()
    changed.sft_config = {**changed.sft_config, "lr": 0.5}
    assert cache_path(changed, train_fn=train) != base
    assert cache_path(world) != base  # the default trainer (train_sft) is a different recipe
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert cache_path(world, train_fn=train) != base


def _corrupt_bytes(entry):
    path = entry / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(entry):
    path = entry / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _drop_manifest(entry):
    (entry / "manifest.json").unlink()


def _garbage_with_matching_manifest(entry):
    (entry / "model.safetensors").write_bytes(b"not a safetensors file")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = cache._sha256(entry / "model.safetensors")
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _other_key(entry):
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"]["world"]["seed"] = 123
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage", [_corrupt_bytes, _truncate, _drop_manifest, _garbage_with_matching_manifest, _other_key]
)
def test_damaged_entry_is_detected_and_rebuilt(env, damage):
    world, train = small_world(), CountingTrainer()
    model, _ = reference_model(world, device="cpu", progress=False, train_fn=train)
    damage(cache_path(world, train_fn=train))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rebuilt, _ = reference_model(world, device="cpu", progress=False, train_fn=train)
    assert train.calls == 2 and same_weights(weights(rebuilt), weights(model))  # deterministic retraining
    reference_model(world, device="cpu", progress=False, train_fn=train)  # and the new entry is sound
    assert train.calls == 2


def test_crash_during_write_leaves_nothing_that_loads(env, monkeypatch):
    world, train = small_world(), CountingTrainer()

    def crash(src, dst):
        raise OSError("simulated crash while moving the entry into place")

    with monkeypatch.context() as patch:
        patch.setattr(cache.os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            reference_model(world, device="cpu", progress=False, train_fn=train)
    assert list(env.iterdir()) == []  # no entry, and the temporary directory was removed
    os.makedirs(env / ".tmp-leftover-from-a-killed-process")
    reference_model(world, device="cpu", progress=False, train_fn=train)
    assert train.calls == 2 and cache_path(world, train_fn=train).is_dir()


def test_bad_arguments(env):
    with pytest.raises(TypeError, match="world must be"):
        reference_model(object())
    with pytest.raises(TypeError, match="train_fn must be callable"):
        reference_model(small_world(), train_fn="train_sft")


@pytest.mark.slow
def test_real_sft_reference_model_of_the_sequences_world(env):
    """The default recipe: π_ref learns the demonstrator and differs clearly from uniform and from π*_0.5."""
    world = SequenceWorld()
    model, _ = reference_model(world, device="cpu", progress=False)
    ref = world.logprobs(model)
    torch.testing.assert_close(ref.exp().sum(-1), torch.ones(8), atol=1e-5, rtol=0)
    assert float(theory.kl_divergence(world.demonstrator_logps, ref).mean()) < 0.2
    kl_to_uniform = math.log(512) + float((ref.exp() * ref).sum(-1).mean())
    assert kl_to_uniform > 0.5
    assert 1.0 < float(theory.kl_divergence(ref, world.optimal_policy(0.5, ref)).mean()) < 2.5
    manifest = json.loads((cache_path(world) / "manifest.json").read_text())
    assert manifest["sft"]["steps"] == 16384 // 64


def test_loaded_model_does_not_follow_later_changes_to_the_file(env):
    """transformers memory-maps safetensors; the cache copies the weights so a rebuilt entry cannot alter them."""
    world, train = small_world(), CountingTrainer()
    reference_model(world, device="cpu", progress=False, train_fn=train)
    loaded, _ = reference_model(world, device="cpu", progress=False, train_fn=train)
    before = weights(loaded)
    _corrupt_bytes(cache_path(world, train_fn=train))
    assert same_weights(weights(loaded), before)
