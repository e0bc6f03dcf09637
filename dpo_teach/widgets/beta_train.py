"""Chapter 07's widget: β moves π*_β along the exact reward–KL curve; *Train* runs DPO and shows where it lands.

The curve and π*_β's point on it come in closed form from :mod:`dpo_teach.frontier` (well under a millisecond
for 8 × 512 responses, so the slider redraws while it moves). This module adds the training half:

* :func:`train_at_beta` — DPO at one β on a fixed set of preference pairs (the package trainer with
  :data:`DPO_RECIPE`), evaluated exactly: where it landed and KL(π_θ ‖ π*_β), as a :class:`TrainedPoint`.
* :func:`beta_trainer` — the widget: a log-scale β slider, a readout, the curve with π*_β's point (an SVG in
  an ``ipywidgets.Image``, plain widget state as in :mod:`dpo_teach.widgets.beta_bandit`; the curve is rendered
  once and the star is written into the SVG, so a slider move costs no matplotlib render: :class:`FrontierCanvas`),
  and a *Train at this β* button with its own progress bar (an ``IntProgress``). :meth:`BetaTrainer.update` and
  :meth:`BetaTrainer.train` do what the controls do, so pytest can drive them.

Stable hooks for the browser tests: the CSS classes below, the slider's description ``"β"``, the button's
description :data:`BUTTON_DESCRIPTION`; in the readout ``data-quantity`` spans ``beta``, ``expected_reward``,
``kl`` (3 decimals, :func:`dpo_teach.widgets.beta_bandit.readout_html`), and in the training result
``train_beta``, ``train_kl``, ``train_expected_reward``, ``kl_to_optimal`` (3 decimals).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure

from dpo_teach._validate import check_positive
from dpo_teach.device import single_thread
from dpo_teach.experiments import run_variant
from dpo_teach.frontier import optimal_point, reward_kl_curve
from dpo_teach.plotting import plot_reward_kl_frontier
from dpo_teach.widgets import SLIDER_DESCRIPTION as SLIDER_DESCRIPTION
from dpo_teach.widgets import SliderWidget, beta_slider
from dpo_teach.widgets.beta_bandit import readout_html
from dpo_teach.widgets.canvas import Star, SvgCanvas, layered_image, place_point_labels

CSS_ROOT = "dpo-beta-train"
CSS_SLIDER = "dpo-beta-slider"
CSS_READOUT = "dpo-beta-readout"
CSS_BUTTON = "dpo-train-button"
CSS_PROGRESS = "dpo-train-progress"
CSS_RESULT = "dpo-train-result"
CSS_PLOT = "dpo-beta-train-plot"
BUTTON_DESCRIPTION = "Train at this β"

#: The DPO settings of :func:`train_at_beta` (fields of :class:`dpo_teach.trainers.DPOConfig`), chosen on the
#: default SequenceWorld with N_PAIRS pairs: 189 steps, about 10 s of one CPU core, ≈ 0.1 nats from π*_β at β = 1.
DPO_RECIPE = {"lr": 2e-3, "epochs": 3, "batch_size": 128, "lr_scheduler_type": "linear"}
#: How many preference pairs :func:`train_at_beta` samples from π_ref when it is given none.
N_PAIRS = 8000


@dataclass
class TrainedPoint:
    """Where one DPO run landed: its β, its point (``kl`` to π_ref, ``expected_reward``), the exact
    ``kl_to_optimal`` KL(π_θ ‖ π*_β) and ``implicit_reward_corr`` (SequenceWorld.evaluate), π*_β's own point
    (``optimal_kl``, ``optimal_expected_reward``), ``steps``, ``seconds`` (wall clock), the metrics ``history``
    and the policy's log-prob table ``policy_logps`` ``[P, N]``."""

    beta: float
    kl: float
    expected_reward: float
    kl_to_optimal: float
    implicit_reward_corr: float
    optimal_kl: float
    optimal_expected_reward: float
    steps: int
    seconds: float
    history: list = field(repr=False)
    policy_logps: torch.Tensor = field(repr=False)


def _check_world(world) -> None:
    if not all(hasattr(world, a) for a in ("reward_table", "logprobs", "evaluate", "preference_pairs")):
        raise TypeError(
            f"world must be an enumerable world such as dpo_teach.worlds.SequenceWorld (with reward_table, "
            f"logprobs and evaluate), got {type(world).__name__}."
        )


def train_at_beta(
    world,
    ref_model,
    beta: float,
    *,
    pairs=None,
    ref_logps=None,
    seed: int = 0,
    progress: bool = True,
    callback=None,
    **dpo_options,
) -> TrainedPoint:
    """Train a copy of ``ref_model`` with DPO at ``beta`` and return where it landed (:class:`TrainedPoint`).

    Args:
        world: a :class:`~dpo_teach.worlds.SequenceWorld` (exact evaluation).
        ref_model: π_ref (e.g. from :func:`dpo_teach.cache.reference_model`); it is copied, never trained.
        beta: the DPO β > 0.
        pairs: preference rows (``prompt``/``chosen``/``rejected``); default :data:`N_PAIRS` pairs sampled from
            π_ref with ``seed`` and labelled by Bradley–Terry with the true reward. Pass the same rows to
            compare several β on the same data.
        ref_logps: ``world.logprobs(ref_model)`` if already computed (saves one enumeration).
        seed: the trainer's seed (batch order) and the pairs' seed.
        progress, callback: passed to the trainer (a tqdm bar; ``callback(metrics)`` after each step).
        dpo_options: :class:`~dpo_teach.trainers.DPOConfig` fields overriding :data:`DPO_RECIPE`.
    """
    _check_world(world)
    beta = check_positive("beta", beta)
    ref_logps = world.logprobs(ref_model) if ref_logps is None else ref_logps
    if pairs is None:
        pairs = world.preference_pairs(ref_logps, n=N_PAIRS, seed=seed)
    options = {**DPO_RECIPE, **dpo_options}
    start = time.perf_counter()
    with single_thread():  # a 64-wide model gains nothing from a thread pool; a busy CPU loses ~15x with one
        run = run_variant(
            world, ref_model, pairs, eval_beta=beta, ref_logps=ref_logps, beta=beta, seed=seed,
            progress=progress, callback=callback, **options,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    optimum = optimal_point(ref_logps, world.reward_table, beta)
    return TrainedPoint(
        beta=beta,
        kl=run.metrics["kl_to_ref"],
        expected_reward=run.metrics["expected_reward"],
        kl_to_optimal=run.metrics["kl_to_optimal"],
        implicit_reward_corr=run.metrics["implicit_reward_corr"],
        optimal_kl=optimum["kl"],
        optimal_expected_reward=optimum["expected_reward"],
        steps=len(run.history),
        seconds=seconds,
        history=run.history,
        policy_logps=run.logps,
    )


def n_steps(n_pairs: int, **dpo_options) -> int:
    """The number of optimizer steps :func:`train_at_beta` takes on ``n_pairs`` pairs (for a progress bar)."""
    options = {**DPO_RECIPE, **dpo_options}
    micro = options["epochs"] * -(-n_pairs // options["batch_size"])
    return -(-micro // options.get("grad_accum", 1))


def train_result_html(point: TrainedPoint) -> str:
    """The line shown after *Train*: where DPO landed, where π*_β is, and KL(π_θ ‖ π*_β), 3 decimals."""
    return (
        f'DPO at β = <span data-quantity="train_beta">{point.beta:.3f}</span> landed at '
        f'KL(π<sub>θ</sub>‖π<sub>ref</sub>) = <span data-quantity="train_kl">{point.kl:.3f}</span> nats, '
        f'E[r] = <span data-quantity="train_expected_reward">{point.expected_reward:.3f}</span> '
        f"(π*<sub>β</sub>: KL = {point.optimal_kl:.3f}, E[r] = {point.optimal_expected_reward:.3f}); "
        f'KL(π<sub>θ</sub>‖π*<sub>β</sub>) = <span data-quantity="kl_to_optimal">{point.kl_to_optimal:.3f}</span>'
        f" nats after {point.steps} steps"
    )


@dataclass
class BetaTrainer(SliderWidget):
    """The β widget of chapter 07 and its handles (see :func:`beta_trainer`). ``point`` is the latest
    :func:`optimal_point`, ``trained`` the :class:`TrainedPoint` of every *Train* so far, ``canvas`` the
    picture (:class:`FrontierCanvas`): ``frame_image`` shows its curve and landings (redrawn after *Train*),
    ``image`` the star over it (redrawn per slider move). Displaying the object displays ``widget``."""

    world: object
    ref_model: object
    ref_logps: torch.Tensor
    pairs: list
    curve: dict
    dpo_options: dict
    seed: int
    widget: object
    slider: object
    readout: object
    button: object
    progress: object
    result: object
    frame_image: object
    image: object
    canvas: FrontierCanvas | None = None
    point: dict = field(default_factory=dict)
    trained: list = field(default_factory=list)

    def shown(self) -> dict:
        """The latest :func:`optimal_point` of π*_β at the slider's β (what :meth:`update` returns)."""
        return self.point

    def train(self) -> TrainedPoint:
        """Run DPO at the slider's β (what the button does), add the landing point to the plot; return it."""
        self.button.disabled = True
        self.progress.value = 0
        self.progress.max = n_steps(len(self.pairs), **self.dpo_options)
        self.result.value = f"training DPO at β = {self.slider.value:.3f} …"

        def advance(metrics: dict) -> None:
            self.progress.value = metrics["step"]

        try:
            landed = train_at_beta(
                self.world,
                self.ref_model,
                self.slider.value,
                pairs=self.pairs,
                ref_logps=self.ref_logps,
                seed=self.seed,
                progress=False,
                callback=advance,
                **self.dpo_options,
            )
        finally:
            self.button.disabled = False
        self.trained.append(landed)
        self.result.value = train_result_html(landed)
        self.canvas = FrontierCanvas.draw(self.curve, self.trained)
        self.frame_image.value = self.canvas.canvas.frame_svg()
        self._redraw(self.slider.value)
        return landed

    def _redraw(self, beta: float) -> None:
        """π*_β's point in closed form, the readout, and the star moved on the cached figure (no re-render)."""
        self.point = optimal_point(self.ref_logps, self.world.reward_table, beta)
        self.readout.value = readout_html(self.point)
        self.image.value = self.canvas.star_layer(self.point)


STAR_ID = "dpo-optimal-point"


@dataclass
class FrontierCanvas:
    """The widget's picture: the π*_β curve and the DPO landings, rendered by matplotlib once
    (:class:`~dpo_teach.widgets.canvas.SvgCanvas`), with π*_β's star written into the SVG per move.

    ``figure`` is the static matplotlib figure. ``star_layer`` returns the star's SVG layer as bytes; the star is
    ``<g id="dpo-optimal-point">`` with ``data-beta``, ``data-kl``, ``data-expected-reward`` attributes and its
    centre in ``data-x``/``data-y``. The star has no text label (the legend names it and the readout gives its
    numbers), so no slider position can put a label over another.
    """

    figure: Figure
    canvas: SvgCanvas

    @classmethod
    def draw(cls, curve: dict, trained=()) -> FrontierCanvas:
        """Render the π*_β curve and the :class:`TrainedPoint` landings (joined to their targets by dots)."""
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        ax.plot([], [], marker="*", markersize=12, color="#d62728", markeredgecolor="black", linestyle="none",
                label=r"$\pi^*_\beta$ at the slider's $\beta$")  # fmt: skip
        series = {}
        if trained:
            series["DPO (trained here)"] = {
                "kl": [t.kl for t in trained],
                "expected_reward": [t.expected_reward for t in trained],
                "beta": [t.beta for t in trained],
                "target_kl": [t.optimal_kl for t in trained],
                "target_reward": [t.optimal_expected_reward for t in trained],
            }
        plot_reward_kl_frontier(curve, series, ax=ax, title=r"$\pi^*_\beta$ and where DPO lands")
        ax.set_xlim(ax.get_xlim())  # the star must not move the limits
        ax.set_ylim(ax.get_ylim())
        fig.tight_layout()
        place_point_labels(ax)  # again, now that the layout is final
        return cls(fig, SvgCanvas(fig))

    def star(self, point: dict) -> Star:
        return Star(
            0, point["kl"], point["expected_reward"], color="#d62728", element_id=STAR_ID,
            attributes={"data-beta": f"{point['beta']:.6g}", "data-kl": f"{point['kl']:.6g}",
                        "data-expected-reward": f"{point['expected_reward']:.6g}"},
        )  # fmt: skip

    def star_layer(self, point: dict) -> bytes:
        """Only the star, on a transparent SVG the size of the picture (the widget's top layer)."""
        return self.canvas.marks_svg([self.star(point)])


def beta_trainer(
    world,
    ref_model,
    *,
    pairs=None,
    ref_logps=None,
    beta: float = 0.5,
    beta_min: float = 0.05,
    beta_max: float = 20.0,
    seed: int = 0,
    **dpo_options,
) -> BetaTrainer:
    """Build chapter 07's widget for ``world`` and its π_ref ``ref_model``.

    ``pairs``: the preference rows every *Train* uses (default: :data:`N_PAIRS` from π_ref with ``seed``);
    ``beta`` the slider's start on a log scale over [``beta_min``, ``beta_max``]; ``dpo_options`` override
    :data:`DPO_RECIPE`. The curve is computed once; a slider move recomputes only π*_β's point and redraws.
    """
    import ipywidgets as widgets

    _check_world(world)
    slider = beta_slider(beta, beta_min, beta_max, CSS_SLIDER)  # validates β and the range first
    ref_logps = world.logprobs(ref_model) if ref_logps is None else ref_logps
    if pairs is None:
        pairs = world.preference_pairs(ref_logps, n=N_PAIRS, seed=seed)
    betas = torch.logspace(math.log10(beta_min), math.log10(beta_max), 121, dtype=torch.float64)
    curve = reward_kl_curve(ref_logps, world.reward_table, betas)
    readout = widgets.HTML()
    readout.add_class(CSS_READOUT)
    button = widgets.Button(
        description=BUTTON_DESCRIPTION, button_style="primary", layout=widgets.Layout(width="auto")
    )
    button.add_class(CSS_BUTTON)
    progress = widgets.IntProgress(value=0, min=0, max=n_steps(len(pairs), **dpo_options), description="DPO")
    progress.add_class(CSS_PROGRESS)
    result = widgets.HTML("press <i>Train at this β</i> to run DPO at the slider's β")
    result.add_class(CSS_RESULT)
    canvas = FrontierCanvas.draw(curve)
    plot, image = layered_image(canvas.canvas, CSS_PLOT)
    root = widgets.VBox([widgets.HBox([slider, button, progress]), readout, result, plot])
    root.add_class(CSS_ROOT)
    trainer = BetaTrainer(
        world,
        ref_model,
        ref_logps,
        list(pairs),
        curve,
        dict(dpo_options),
        seed,
        root,
        slider,
        readout,
        button,
        progress,
        result,
        plot.children[0],
        image,
        canvas,
    )
    button.on_click(lambda _: trainer.train())
    return trainer._connect()


__all__ = [
    "BetaTrainer",
    "DPO_RECIPE",
    "N_PAIRS",
    "TrainedPoint",
    "beta_trainer",
    "n_steps",
    "optimal_point",
    "FrontierCanvas",
    "STAR_ID",
    "train_at_beta",
    "train_result_html",
]
