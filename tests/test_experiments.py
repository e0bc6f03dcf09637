"""run_variant (train a copy of π_ref with a registry loss, evaluate exactly) and format_table."""

from __future__ import annotations

import pytest
import torch

from dpo_teach.experiments import METRICS, format_table, run_variant
from dpo_teach.models import tiny_gpt2
from dpo_teach.worlds import SequenceWorld

CONFIG = {"lr": 1e-2, "epochs": 1, "batch_size": 16, "seed": 0}


@pytest.fixture(scope="module")
def setup():
    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=3, seed=1)
    ref = tiny_gpt2(world.tokenizer, n_layer=1, n_embd=16, n_head=2, n_positions=12, seed=0).eval()
    ref_logps = world.logprobs(ref)
    pairs = world.preference_pairs(ref_logps, n=48, seed=2)
    return world, ref, ref_logps, pairs


def _by_hand(logps, ref_logps, rewards, beta):
    """KL(π‖π_ref), E_π[r], KL(π‖π*) with π* = softmax(log π_ref + r/β), written out, mean over prompts."""
    p = logps.double().exp()
    optimal = torch.log_softmax(ref_logps.double() + rewards.double() / beta, -1)
    kl_ref = (p * (logps.double() - ref_logps.double())).sum(-1).mean()
    kl_opt = (p * (logps.double() - optimal)).sum(-1).mean()
    return {"kl_to_ref": kl_ref.item(), "expected_reward": (p * rewards.double()).sum(-1).mean().item(),
            "kl_to_optimal": kl_opt.item()}  # fmt: skip


def test_run_variant_trains_a_copy_and_measures_it_exactly(setup):
    world, ref, ref_logps, pairs = setup
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    run = run_variant(
        world, ref, pairs, eval_beta=0.5, ref_logps=ref_logps, loss_type="sigmoid", beta=0.5, **CONFIG
    )
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # π_ref untouched
    assert run.name == "sigmoid" and run.loss_type == "sigmoid" and len(run.history) == 3  # 48 pairs / 16
    torch.testing.assert_close(run.logps, world.logprobs(run.model))
    assert (run.logps - ref_logps).abs().max() > 1e-3  # the copy was trained
    expected = _by_hand(run.logps, ref_logps, world.reward_table, 0.5)
    for key, value in expected.items():
        assert run.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    assert set(run.metrics) == set(METRICS)
    assert run.row() == {"name": "sigmoid", "loss_type": "sigmoid", **run.metrics}


def test_eval_beta_sets_the_optimum_measured_against(setup):
    world, ref, ref_logps, pairs = setup
    kwargs = {"ref_logps": ref_logps, "loss_type": "hinge", "beta": 0.5, **CONFIG}
    a = run_variant(world, ref, pairs, eval_beta=0.5, **kwargs)
    b = run_variant(world, ref, pairs, eval_beta=2.0, **kwargs)
    torch.testing.assert_close(a.logps, b.logps)  # same seed, same training
    assert b.metrics["kl_to_optimal"] == pytest.approx(_by_hand(b.logps, ref_logps, world.reward_table, 2.0)["kl_to_optimal"], rel=1e-4)  # fmt: skip
    assert a.metrics["kl_to_optimal"] != pytest.approx(b.metrics["kl_to_optimal"], rel=1e-3)


def test_reference_free_and_unpaired_losses(setup):
    world, ref, ref_logps, pairs = setup
    simpo = run_variant(world, ref, pairs, eval_beta=0.5, loss_type="simpo", beta=2.0, name="SimPO", **CONFIG)
    assert simpo.name == "SimPO" and (simpo.logps - ref_logps).abs().max() > 1e-3
    kto_rows = world.kto_dataset(ref_logps, n=24, seed=2)
    kto = run_variant(world, ref, kto_rows, eval_beta=0.5, loss_type="kto", beta=0.5, **CONFIG)
    assert len(kto.history) == 3 and (kto.logps - ref_logps).abs().max() > 1e-3  # 48 unpaired rows / 16


def test_unpaired_rows_for_a_paired_loss_is_a_value_error(setup):
    world, ref, ref_logps, _ = setup
    kto_rows = world.kto_dataset(ref_logps, n=4, seed=0)
    with pytest.raises(ValueError, match="preference_pairs"):
        run_variant(world, ref, kto_rows, eval_beta=0.5, loss_type="ipo")


def test_empty_rows_is_a_value_error(setup):
    world, ref, _, _ = setup
    with pytest.raises(ValueError, match="rows is empty"):
        run_variant(world, ref, [], eval_beta=0.5)


def test_unknown_loss_type_is_a_value_error(setup):
    world, ref, _, pairs = setup
    with pytest.raises(ValueError, match="unknown loss"):
        run_variant(world, ref, pairs, eval_beta=0.5, loss_type="dpo++")


def test_ref_model_of_wrong_type_is_a_type_error(setup):
    world, _, _, pairs = setup
    with pytest.raises(TypeError, match="ref_model"):
        run_variant(world, "gpt2", pairs, eval_beta=0.5)


def test_world_without_exact_evaluation_is_a_type_error(setup):
    _, ref, _, pairs = setup
    with pytest.raises(TypeError, match="world"):
        run_variant(object(), ref, pairs, eval_beta=0.5)


def test_format_table_aligns_numbers_right_and_text_left():
    rows = [
        {"name": "DPO", "kl": 0.27149, "n": 64},
        {"name": "SimPO", "kl": 1.3381},
        {"name": "x", "kl": None},
    ]
    table = format_table(rows, [("name", "variant", ""), ("kl", "KL", ".3f"), ("n", "steps", "d")])
    expected = "\n".join(
        [
            "variant     KL  steps",
            "-------  -----  -----",
            "DPO      0.271     64",
            "SimPO    1.338      —",
            "x            —      —",
        ]
    )
    assert table == expected


def test_format_table_bad_columns_is_a_type_error():
    with pytest.raises(TypeError, match="columns"):
        format_table([{"a": 1}], ["a"])
