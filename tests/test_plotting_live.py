"""LiveMetricsPlot, the trainers' live-plot callback: what it records, when it redraws, what it draws."""

from __future__ import annotations

import math

import IPython.display
import pytest

from dpo_teach.plotting import DPO_PANELS, LiveMetricsPlot


def fake_metrics(step: int) -> dict:
    return {"step": step, "rewards/chosen": 0.1 * step, "rewards/rejected": -0.05 * step,
            "rewards/margins": 0.15 * step, "rewards/accuracies": (step % 3) / 2}  # fmt: skip


def test_redraws_every_n_steps_and_once_more_on_finish():
    live = LiveMetricsPlot(every=10, display=False)
    for step in range(1, 26):
        live(fake_metrics(step))
    assert live.draws == 2 and len(live.history) == 25
    live.finish()
    assert live.draws == 3
    live.finish()  # nothing new since the last redraw
    assert live.draws == 3


def test_lines_hold_the_logged_values_and_their_moving_average():
    live = LiveMetricsPlot(every=100, ema=0.5, display=False)
    for step in range(1, 8):
        live(fake_metrics(step))
    fig = live.finish()
    assert len(fig.axes) == len(DPO_PANELS)
    raw, smooth = fig.axes[1].lines  # the margin panel: raw then smoothed
    assert list(raw.get_xdata()) == list(range(1, 8))
    assert list(raw.get_ydata()) == pytest.approx([0.15 * s for s in range(1, 8)])
    expected, acc = [], 0.15
    for s in range(1, 8):
        acc = 0.5 * acc + 0.5 * 0.15 * s
        expected.append(acc)
    assert list(smooth.get_ydata()) == pytest.approx(expected)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "rewards/chosen",
        "rewards/rejected",
    ]


def test_extra_values_are_computed_at_redraws_only():
    calls = []

    def extra():
        calls.append(len(calls))
        return {"kl": math.exp(-len(calls))}

    live = LiveMetricsPlot([("exact KL", ["kl"])], every=4, extra=extra, display=False)
    for step in range(1, 11):
        live(fake_metrics(step))
    live.finish()
    assert len(calls) == 3  # steps 4, 8 and the final 10
    steps, values = live.series("kl")
    assert steps == [4, 8, 10] and values == pytest.approx([math.exp(-1), math.exp(-2), math.exp(-3)])
    (line,) = live.axes[0].lines
    assert line.get_marker() == "o" and list(line.get_xdata()) == [4, 8, 10]


def test_the_callers_metrics_are_not_modified():
    metrics = fake_metrics(1)
    live = LiveMetricsPlot(every=1, extra=lambda: {"kl": 0.5}, display=False)
    live(metrics)
    assert "kl" not in metrics and live.history[0]["kl"] == 0.5


def test_one_display_then_updates_of_the_same_output(monkeypatch):
    events = []

    class Handle:
        def update(self, obj):
            events.append(("update", obj))

    def display(obj, display_id=False):
        events.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    live = LiveMetricsPlot(every=2, display=True)
    for step in range(1, 7):
        live(fake_metrics(step))
    assert [e for e, _ in events] == ["display", "update", "update"]
    assert all(obj is live.figure for _, obj in events)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every": 0}, ValueError, "every"),
        ({"every": 2.5}, ValueError, "every"),
        ({"ema": 1.0}, ValueError, "ema"),
        ({"panels": []}, ValueError, "panels"),
        ({"panels": [("empty", [])]}, ValueError, "panels"),
        ({"extra": 3}, TypeError, "extra"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        LiveMetricsPlot(**{"display": False, **kwargs})


def test_a_log_panel_and_a_starting_point_logged_before_training():
    live = LiveMetricsPlot([("KL", ["kl"], "log"), ("margin", ["rewards/margins"])], every=3,
                           extra=lambda: {"kl": 0.1}, display=False)  # fmt: skip
    live({"step": 0, "kl": 1.5})  # e.g. the exact value at π_ref, before the first step
    for step in range(1, 6):
        live(fake_metrics(step))
    live.finish()
    assert live.axes[0].get_yscale() == "log" and live.axes[1].get_yscale() == "linear"
    steps, values = live.series("kl")
    assert steps == [0, 2, 5] and values == pytest.approx([1.5, 0.1, 0.1])
    assert live.series("rewards/margins")[0] == [1, 2, 3, 4, 5]


def test_an_unknown_panel_scale_is_named():
    with pytest.raises(ValueError, match="log"):
        LiveMetricsPlot([("KL", ["kl"], "symlog")], display=False)
