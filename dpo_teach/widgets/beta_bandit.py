"""Chapter 02's widget: drag β and watch the optimal policy move between π_ref and the argmax of r.

For one prompt x of a :class:`~dpo_teach.worlds.BanditWorld` the KL-regularised optimum is known in closed form
(DPO paper, Eq. 4):

    π*_β(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x),        Z(x) = Σ_y π_ref(y|x) exp(r(x, y)/β),

and with it the two numbers that trade off against each other, the expected reward E_{π*_β}[r] and the
divergence KL(π*_β ‖ π_ref). :func:`beta_view` computes all of them with :mod:`dpo_teach.theory` (never a
copy) — a few microseconds, so the slider redraws while it moves; :func:`beta_explorer` wires it to a
log-scale ipywidgets slider, an HTML readout and a matplotlib bar chart rendered to PNG bytes in an
``ipywidgets.Image`` (no ipympl needed). Why an Image rather than an ``Output`` widget: displaying into an
Output from a callback relies on the frontend to route the message, and a kernel-only runner (strict nbval)
then sees the figure as an extra output of whichever cell moved the slider; an Image's bytes are plain widget
state, identical in JupyterLab, in nbval and in a static render that embeds the widget state.

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
from dpo_teach.widgets import figure_png, log_beta_slider, move_slider

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


def plot_beta_view(view: dict) -> Figure:
    """Bars of π_ref and π*_β (left) and of the reward r (right) for a :func:`beta_view` dict.

    A plain :class:`matplotlib.figure.Figure` (not registered with pyplot, so nothing is shown twice and
    nothing needs closing); a notebook shows it with ``display(fig)``.
    """
    names = view["responses"]
    k = torch.arange(len(names)).numpy()
    fig = Figure(figsize=(10, 3.4))
    ax_p, ax_r = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax_p.bar(k - 0.2, view["ref_probs"].numpy(), width=0.4, color="#9e9e9e", label="π_ref")
    ax_p.bar(
        k + 0.2, view["policy_probs"].numpy(), width=0.4, color="C0", label=f"π*  (β = {view['beta']:.3g})"
    )
    ax_p.set_ylim(0, 1.02)
    ax_p.set_xticks(k, names, rotation=30)
    ax_p.set_xlabel("response y")
    ax_p.set_ylabel("probability")
    ax_p.set_title(
        f"π* = π_ref·exp(r/β)/Z:  E[r] = {view['expected_reward']:.3f},  KL(π*‖π_ref) = {view['kl']:.3f}",
        fontsize=10,
    )
    ax_p.legend(loc="upper right")
    colors = ["C2" if r >= 0 else "C3" for r in view["rewards"].tolist()]
    ax_r.bar(k, view["rewards"].numpy(), color=colors)
    ax_r.axhline(view["expected_reward"], color="C0", linestyle="--", label="E_π*[r]")
    ax_r.axhline(view["ref_expected_reward"], color="#9e9e9e", linestyle=":", label="E_π_ref[r]")
    ax_r.set_xticks(k, names, rotation=30)
    ax_r.set_xlabel("response y")
    ax_r.set_ylabel("true reward r(x, y)")
    ax_r.set_title("reward r and the two expected rewards", fontsize=10)
    ax_r.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def readout_html(view: dict) -> str:
    """The readout line: β, E_{π*}[r] and KL(π*‖π_ref) to 3 decimals, each in a ``data-quantity`` span."""
    return (
        f'β = <span data-quantity="beta">{view["beta"]:.3f}</span> · '
        f'expected reward E<sub>π*</sub>[r] = <span data-quantity="expected_reward">'
        f"{view['expected_reward']:.3f}</span> · "
        f'KL(π*‖π<sub>ref</sub>) = <span data-quantity="kl">{view["kl"]:.3f}</span> nats'
    )


@dataclass
class BetaExplorer:
    """The β widget and its handles: ``widget`` (what is displayed), ``slider``, ``readout``, ``image`` (the
    bars as PNG); ``view`` is the latest :func:`beta_view` dict and ``figure`` the latest bar chart.
    Displaying the explorer displays ``widget``."""

    world: object
    prompt: int
    widget: object
    slider: object
    readout: object
    image: object
    view: dict = field(default_factory=dict)
    figure: Figure | None = None

    def update(self, beta: float) -> dict:
        """Set β (moving the slider), recompute π*_β in closed form, redraw readout and bars; return the view.

        Raises ``TypeError``/``ValueError`` for a β that is not a positive number inside the slider's range.
        """
        move_slider(self.slider, beta, self._redraw)  # the slider's observer redraws
        return self.view

    def _redraw(self, beta: float) -> None:
        self.view = beta_view(self.world, beta, self.prompt)
        self.readout.value = readout_html(self.view)
        self.figure = plot_beta_view(self.view)
        self.image.value = figure_png(self.figure)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def beta_explorer(
    world, beta: float = 1.0, *, prompt: int = 0, beta_min: float = 0.01, beta_max: float = 100.0
) -> BetaExplorer:
    """Build the β widget for one prompt of ``world``: a log-scale slider over [beta_min, beta_max], the readout
    (E_{π*}[r] and KL to 3 decimals) and the bars of π_ref, π*_β and r, all recomputed on every slider move."""
    import ipywidgets as widgets

    slider = log_beta_slider(beta, beta_min, beta_max, CSS_SLIDER)
    _prompt_tables(world, prompt)  # fail here, with the clear message, rather than inside a callback
    readout = widgets.HTML()
    readout.add_class(CSS_READOUT)
    image = widgets.Image(format="png")
    image.add_class(CSS_PLOT)
    root = widgets.VBox([slider, readout, image])
    root.add_class(CSS_ROOT)
    explorer = BetaExplorer(world, prompt, root, slider, readout, image)
    slider.observe(lambda change: explorer._redraw(change["new"]), names="value")
    explorer._redraw(beta)
    return explorer


__all__ = ["BetaExplorer", "beta_explorer", "beta_view", "figure_png", "plot_beta_view", "readout_html"]
