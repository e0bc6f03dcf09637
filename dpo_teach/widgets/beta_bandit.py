"""Chapter 02's widget: drag β and watch the optimal policy move between π_ref and the argmax of r.

For one prompt x of a :class:`~dpo_teach.worlds.BanditWorld` the KL-regularised optimum is known in closed form
(DPO paper, Eq. 4):

    π*_β(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x),        Z(x) = Σ_y π_ref(y|x) exp(r(x, y)/β),

and with it the two numbers that trade off against each other, the expected reward E_{π*_β}[r] and the
divergence KL(π*_β ‖ π_ref). :func:`beta_view` computes all of them with :mod:`dpo_teach.theory` (never a
copy) — a few microseconds. :func:`beta_explorer` wires it to a slider over an exact β grid
(:func:`dpo_teach.widgets.beta_slider`), an HTML readout and the bar chart as SVG in an ``ipywidgets.Image``: the
frame (axes, π_ref, r, labels) is rendered by matplotlib once and only π*_β's bars and E_π*[r]'s line are
rewritten per move (:mod:`dpo_teach.widgets.canvas`), so a slider step costs about a millisecond, not a
matplotlib render. Why an Image rather than an ``Output`` widget: displaying into an Output from a callback
relies on the frontend to route the message, and a kernel-only runner (strict nbval) then sees the figure as an
extra output of whichever cell moved the slider; an Image's bytes are plain widget state, identical in
JupyterLab, in nbval and in a static render that embeds the widget state.

Stable hooks for tests and the browser tests: the CSS classes below (``add_class``), the slider's
``description`` ``"β"``, and in the readout one ``<span data-quantity="...">`` per number, formatted to
3 decimals: ``beta``, ``expected_reward``, ``kl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure

from dpo_teach._validate import check_positive
from dpo_teach.theory import expected_reward, kl_divergence, log_partition_function, optimal_policy
from dpo_teach.widgets import SLIDER_DESCRIPTION as SLIDER_DESCRIPTION
from dpo_teach.widgets import SliderWidget, beta_slider
from dpo_teach.widgets.canvas import Bars, Rule, SvgCanvas, draw_marks, layered_image

CSS_ROOT = "dpo-beta-bandit"
CSS_SLIDER = "dpo-beta-slider"
CSS_READOUT = "dpo-beta-readout"
CSS_PLOT = "dpo-beta-plot"


def _prompt_tables(world, prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π_ref(·|x), r(x, ·)) as float64 ``[K]`` for prompt index ``prompt`` of a bandit-like world."""
    if not all(hasattr(world, name) for name in ("ref_logps", "rewards", "responses")):
        raise TypeError(
            f"world must be a BanditWorld (with ref_logps, rewards and responses), got {type(world).__name__}; "
            "build one with dpo_teach.worlds.BanditWorld()."
        )
    if isinstance(prompt, bool) or not isinstance(prompt, int):
        raise TypeError(f"prompt must be an int (a prompt index), got {type(prompt).__name__}.")
    n_prompts = world.ref_logps.shape[0]
    if not 0 <= prompt < n_prompts:
        raise ValueError(f"prompt={prompt} is out of range; this world has prompts 0..{n_prompts - 1}.")
    return world.ref_logps[prompt].double(), world.rewards[prompt].double()


def beta_view(world, beta: float, prompt: int = 0) -> dict:
    """Everything the β widget shows for one prompt, in closed form.

    Args:
        world: a :class:`~dpo_teach.worlds.BanditWorld`.
        beta: the KL coefficient β > 0.
        prompt: the prompt index x (default 0).

    Returns a dict with ``beta`` (float), ``responses`` (K names), float64 tensors ``[K]``: ``ref_probs``
    (π_ref), ``rewards`` (r), ``log_policy`` (log π*_β) and ``policy_probs`` (π*_β); and floats
    ``expected_reward`` (E_{π*_β}[r]), ``kl`` (KL(π*_β ‖ π_ref), nats), ``objective``
    (E_{π*_β}[r] − β KL = β log Z), ``ref_expected_reward`` (E_{π_ref}[r]) and ``max_reward`` (max_y r).
    """
    beta = check_positive("beta", beta)
    ref_logps, rewards = _prompt_tables(world, prompt)
    log_policy = optimal_policy(ref_logps, rewards, beta)
    reward = float(expected_reward(log_policy, rewards))
    kl = float(kl_divergence(log_policy, ref_logps))
    return {
        "beta": beta,
        "responses": list(world.responses),
        "ref_probs": ref_logps.exp(),
        "rewards": rewards,
        "log_policy": log_policy,
        "policy_probs": log_policy.exp(),
        "expected_reward": reward,
        "kl": kl,
        "objective": beta * float(log_partition_function(ref_logps, rewards, beta)),
        "ref_expected_reward": float(expected_reward(ref_logps, rewards)),
        "max_reward": float(rewards.max()),
    }


def beta_frame(view: dict) -> Figure:
    """What does not move with β: the axes, π_ref's bars and the reward's bars, the labels (mathtext) and the
    legends (π*_β and E_π*[r] by proxy). Limits are fixed, so :func:`beta_marks` can be drawn onto it later."""
    names = view["responses"]
    k = torch.arange(len(names)).numpy()
    fig = Figure(figsize=(10, 3.6))
    ax_p, ax_r = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax_p.bar(k - 0.2, view["ref_probs"].numpy(), width=0.4, color="#9e9e9e", label=r"$\pi_{\mathrm{ref}}$")
    ax_p.bar([], [], color="C0", label=r"$\pi^*_\beta$ at the slider's $\beta$")
    ax_p.set_xlim(-0.6, len(names) - 0.4)
    ax_p.set_ylim(0, 1.02)
    ax_p.set_xticks(k, names, rotation=30)
    ax_p.set_xlabel("response $y$")
    ax_p.set_ylabel("probability")
    ax_p.set_title(r"$\pi^*_\beta(y) = \pi_{\mathrm{ref}}(y)\,e^{r(y)/\beta}/Z$", fontsize=11)
    ax_p.legend(loc="upper right")
    colors = ["C2" if r >= 0 else "C3" for r in view["rewards"].tolist()]
    ax_r.bar(k, view["rewards"].numpy(), color=colors)
    ax_r.plot([], [], color="C0", linestyle="--", label=r"$E_{\pi^*_\beta}[r]$")
    ax_r.axhline(
        view["ref_expected_reward"], color="#9e9e9e", linestyle=":", label=r"$E_{\pi_{\mathrm{ref}}}[r]$"
    )
    ax_r.set_xlim(ax_r.get_xlim())
    ax_r.set_ylim(ax_r.get_ylim())
    ax_r.set_xticks(k, names, rotation=30)
    ax_r.set_xlabel("response $y$")
    ax_r.set_ylabel("true reward $r(x, y)$")
    ax_r.set_title("the reward and the two expected rewards", fontsize=11)
    ax_r.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def beta_marks(view: dict) -> list:
    """What moves with β: π*_β's bars (left axes) and the line at E_π*[r] (right axes)."""
    k = torch.arange(len(view["responses"])).numpy()
    return [
        Bars(0, k + 0.2, view["policy_probs"].numpy(), width=0.4, color="C0"),
        Rule(1, view["expected_reward"], color="C0", linestyle="--"),
    ]


def plot_beta_view(view: dict) -> Figure:
    """Bars of π_ref and π*_β (left) and of the reward r (right) for a :func:`beta_view` dict: the widget's
    picture as a plain :class:`matplotlib.figure.Figure` (not registered with pyplot, so nothing is shown twice
    and nothing needs closing); a notebook shows it with ``display(fig)``."""
    return draw_marks(beta_frame(view), beta_marks(view))


def readout_html(view: dict) -> str:
    """The readout line: β, E_{π*}[r] and KL(π*‖π_ref) to 3 decimals, each in a ``data-quantity`` span."""
    return (
        f'β = <span data-quantity="beta">{view["beta"]:.3f}</span> · '
        f'expected reward E<sub>π*</sub>[r] = <span data-quantity="expected_reward">'
        f"{view['expected_reward']:.3f}</span> · "
        f'KL(π*‖π<sub>ref</sub>) = <span data-quantity="kl">{view["kl"]:.3f}</span> nats'
    )


@dataclass
class BetaExplorer(SliderWidget):
    """The β widget and its handles: ``widget`` (what is displayed), ``slider``, ``readout``, ``image`` (the
    moving marks as SVG, over the frame ``canvas`` draws once); ``view`` is the latest :func:`beta_view` dict.
    Displaying the explorer displays ``widget``."""

    world: object
    prompt: int
    widget: object
    slider: object
    readout: object
    image: object
    canvas: SvgCanvas
    view: dict = field(default_factory=dict)

    def shown(self) -> dict:
        """The latest :func:`beta_view` dict (what :meth:`update` returns)."""
        return self.view

    def _redraw(self, beta: float) -> None:
        self.view = beta_view(self.world, beta, self.prompt)
        self.readout.value = readout_html(self.view)
        self.image.value = self.canvas.marks_svg(beta_marks(self.view))


def beta_explorer(
    world, beta: float = 1.0, *, prompt: int = 0, beta_min: float = 0.01, beta_max: float = 100.0
) -> BetaExplorer:
    """Build the β widget for one prompt of ``world``: a log-scale slider over [beta_min, beta_max], the readout
    (E_{π*}[r] and KL to 3 decimals) and the bars of π_ref, π*_β and r, all recomputed on every slider move."""
    import ipywidgets as widgets

    slider = beta_slider(beta, beta_min, beta_max, CSS_SLIDER)
    view = beta_view(world, slider.value, prompt)  # a bad world or prompt fails here, not inside a callback
    readout = widgets.HTML()
    readout.add_class(CSS_READOUT)
    canvas = SvgCanvas(beta_frame(view))
    plot, image = layered_image(canvas, CSS_PLOT)
    root = widgets.VBox([slider, readout, plot])
    root.add_class(CSS_ROOT)
    return BetaExplorer(world, prompt, root, slider, readout, image, canvas)._connect()


__all__ = [
    "BetaExplorer",
    "beta_explorer",
    "beta_frame",
    "beta_marks",
    "beta_view",
    "plot_beta_view",
    "readout_html",
]
