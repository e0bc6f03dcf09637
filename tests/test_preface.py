"""The preface's pipeline diagram and its exercise checker.

The counts are checked against the papers, not against the module: RLHF with PPO (Ouyang et al., 2022)
holds policy, value model, reference and reward model; DPO (Rafailov et al., 2023) holds policy and reference.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.preface import check_models_in_memory
from dpo_teach.plotting import (
    DPO_PIPELINE,
    RLHF_PIPELINE,
    count_stage_boxes,
    draw_pipelines,
    models_in_memory,
)


def test_pipelines_match_the_papers():
    assert [len(RLHF_PIPELINE), len(DPO_PIPELINE)] == [3, 2]
    ppo = RLHF_PIPELINE[-1]
    assert sorted(n.role for n in ppo.networks) == ["policy", "reference", "reward model", "value model"]
    assert sorted(n.role for n in ppo.networks if n.trained) == ["policy", "value model"]
    assert sorted((n.role, n.trained) for n in DPO_PIPELINE[-1].networks) == [
        ("policy", True),
        ("reference", False),
    ]
    assert [s.samples_from_policy for s in RLHF_PIPELINE] == [False, False, True]
    assert not any(s.samples_from_policy for s in DPO_PIPELINE)
    assert (models_in_memory(RLHF_PIPELINE), models_in_memory(DPO_PIPELINE)) == (4, 2)


def test_figure_draws_one_box_per_stage():
    fig = draw_pipelines()
    try:
        assert count_stage_boxes(fig) == [len(RLHF_PIPELINE), len(DPO_PIPELINE)]
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        assert titles == [
            "RLHF: 3 stages, up to 4 networks in memory",
            "DPO: 2 stages, up to 2 networks in memory",
        ]
    finally:
        plt.close(fig)


def test_checker_accepts_the_right_counts():
    verdict = check_models_in_memory(rlhf_ppo=4, dpo=2)
    assert isinstance(verdict, Verdict) and verdict.ok and str(verdict).startswith("✓")


@pytest.mark.parametrize(
    ("rlhf_ppo", "dpo", "named"), [(3, 2, "rlhf_ppo=3"), (4, 1, "dpo=1"), (2, 4, "rlhf_ppo=2")]
)
def test_checker_rejects_wrong_counts_with_a_hint(rlhf_ppo, dpo, named):
    verdict = check_models_in_memory(rlhf_ppo=rlhf_ppo, dpo=dpo)
    assert not verdict and named in verdict.message and str(verdict).startswith("✗")


@pytest.mark.parametrize("bad", ["4", 4.0, True])
def test_checker_wrong_type(bad):
    with pytest.raises(TypeError, match=r"rlhf_ppo must be an int \(a number of networks\)"):
        check_models_in_memory(rlhf_ppo=bad, dpo=2)


def test_checker_negative_count():
    with pytest.raises(ValueError, match=r"dpo=-1 is negative"):
        check_models_in_memory(rlhf_ppo=4, dpo=-1)
