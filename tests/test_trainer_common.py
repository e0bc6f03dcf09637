"""dpo_teach.trainers.common: the data plan, the warm-up schedule, metric averaging, RNG round trips."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from dpo_teach import seed
from dpo_teach._validate import check_positive
from dpo_teach.trainers import common as C

legacy_rand = np.random.rand  # noqa: NPY002 (seed_everything seeds NumPy's legacy global state)


def test_micro_batches_cover_each_epoch_once_and_depend_only_on_the_seed():
    plan = C.micro_batches(10, 4, epochs=3, seed=7)
    assert [len(idx) for _, idx in plan] == [4, 4, 2] * 3
    for epoch in range(3):
        assert sorted(i for e, idx in plan if e == epoch for i in idx) == list(range(10))
    assert plan == C.micro_batches(10, 4, epochs=3, seed=7)
    assert plan != C.micro_batches(10, 4, epochs=3, seed=8)


def test_warmup_is_linear_then_constant_or_linear_decay():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    constant = C.warmup_scheduler(opt, warmup_steps=3)
    factors = [constant.lr_lambdas[0](s) for s in range(6)]
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    decay = C.warmup_scheduler(opt, warmup_steps=1, total_steps=5, decay=True)
    assert [decay.lr_lambdas[0](s) for s in range(1, 6)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_metric_means_are_over_all_examples_of_a_step():
    sums: dict = {}
    C.accumulate_metrics(
        sums, {"a": torch.tensor([1.0, 2.0, 3.0]), "r": (torch.tensor(6.0), torch.tensor(3.0))}
    )
    C.accumulate_metrics(sums, {"a": torch.tensor([10.0]), "r": (torch.tensor(4.0), torch.tensor(2.0))})
    means = C.mean_metrics(sums)
    assert means["a"] == pytest.approx(16 / 4) and means["r"] == pytest.approx(10 / 5)


def test_rng_state_survives_json_and_restores_every_global_generator():
    state = json.loads(json.dumps(seed.rng_state()))
    first = (random.random(), legacy_rand(), torch.rand(2).tolist())
    seed.set_rng_state(state)
    again = (random.random(), legacy_rand(), torch.rand(2).tolist())
    assert first == again


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError), (True, TypeError)],
)
def test_check_positive_rejects_bad_values(value, error):
    with pytest.raises(error, match="lr"):
        check_positive("lr", value)
