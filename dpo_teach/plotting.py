"""Figures of the book that are drawn rather than plotted from data.

The first one is the preface's comparison of the two training pipelines (Rafailov et al., 2023, §3–4):

* RLHF (Ziegler et al., 2019; Ouyang et al., 2022): SFT → a reward model r_φ fitted by Bradley–Terry on
  preference pairs (x, y_w, y_l) → PPO maximising E[r_φ(x, y)] − β·KL(π_θ ‖ π_ref) on samples y ~ π_θ(·|x).
  During PPO four networks are in memory: the policy π_θ and the value model V_ψ (trained), the reference
  π_ref and the reward model r_φ (frozen).
* DPO: SFT → one classification-style loss on the same preference pairs,
  −log σ(β log π_θ(y_w|x)/π_ref(y_w|x) − β log π_θ(y_l|x)/π_ref(y_l|x)); two networks: π_θ (trained) and π_ref
  (frozen). No reward model is fitted and nothing is sampled from π_θ while training.

The pipelines are data (:data:`RLHF_PIPELINE`, :data:`DPO_PIPELINE`) so that the notebook can assert what the
figure shows, and the exercise checker (:mod:`dpo_teach.exercises.preface`) uses the same source.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from dpo_teach.widgets.canvas import POINT_LABEL, place_point_labels

STAGE_GID = "stage"  # gid of every stage box, so tests and the notebook can count what was drawn


@dataclass(frozen=True)
class Network:
    """A network held in memory during a stage: its mathtext symbol, its role, and whether it is updated."""

    symbol: str
    role: str
    trained: bool


@dataclass(frozen=True)
class Stage:
    """One stage of a training pipeline: what it optimises, on which data, with which networks."""

    title: str
    objective: str
    data: str
    networks: tuple[Network, ...]
    samples_from_policy: bool = False


_POLICY = Network(r"$\pi_\theta$", "policy", trained=True)
_REFERENCE = Network(r"$\pi_{\mathrm{ref}}$", "reference", trained=False)
_SFT = Stage(
    "Supervised fine-tuning",
    "max log $\\pi(y\\,|\\,x)$ on demonstrations",
    "demonstrations (x, y)",
    (Network(r"$\pi^{\mathrm{SFT}}$", "policy", trained=True),),
)

RLHF_PIPELINE: tuple[Stage, ...] = (
    _SFT,
    Stage(
        "Reward model",
        "Bradley–Terry: max log $\\sigma(r_\\phi(x, y_w) - r_\\phi(x, y_l))$",
        "preference pairs (x, $y_w$, $y_l$)",
        (Network(r"$r_\phi$", "reward model", trained=True),),
    ),
    Stage(
        "PPO",
        "max $r_\\phi(x, y) - \\beta\\,$KL$(\\pi_\\theta\\,\\|\\,\\pi_{\\mathrm{ref}})$, $y \\sim \\pi_\\theta$",
        "prompts x (responses sampled from $\\pi_\\theta$)",
        (
            _POLICY,
            Network(r"$V_\psi$", "value model", trained=True),
            _REFERENCE,
            Network(r"$r_\phi$", "reward model", trained=False),
        ),
        samples_from_policy=True,
    ),
)

DPO_PIPELINE: tuple[Stage, ...] = (
    _SFT,
    Stage(
        "DPO",
        "min $-$log $\\sigma\\left(\\beta \\log \\dfrac{\\pi_\\theta(y_w|x)}{\\pi_{\\mathrm{ref}}(y_w|x)}"
        " - \\beta \\log \\dfrac{\\pi_\\theta(y_l|x)}{\\pi_{\\mathrm{ref}}(y_l|x)}\\right)$",
        "preference pairs (x, $y_w$, $y_l$)",
        (_POLICY, _REFERENCE),
    ),
)

PIPELINES: dict[str, tuple[Stage, ...]] = {"RLHF": RLHF_PIPELINE, "DPO": DPO_PIPELINE}


def models_in_memory(pipeline: tuple[Stage, ...]) -> int:
    """The largest number of networks any stage of ``pipeline`` holds at once."""
    return max(len(stage.networks) for stage in pipeline)


def _networks_text(stage: Stage) -> str:
    parts = [f"{n.symbol} {n.role} ({'trained' if n.trained else 'frozen'})" for n in stage.networks]
    rows = [", ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join(rows)


def _draw_row(
    ax, name: str, pipeline: tuple[Stage, ...], spans: list[tuple[float, float]], color: str
) -> None:
    """One pipeline on ``ax`` (data coordinates x ∈ [0, 12], y ∈ [0, 4]): data above, stages below, arrows."""
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4)
    ax.axis("off")
    n_models = models_in_memory(pipeline)
    ax.set_title(
        f"{name}: {len(pipeline)} stages, up to {n_models} networks in memory", loc="left", fontsize=12
    )
    for i, (stage, (left, right)) in enumerate(zip(pipeline, spans, strict=True)):
        box = FancyBboxPatch(
            (left, 0.25),
            right - left,
            2.2,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor=color,
            edgecolor="black",
            linewidth=1.2,
            gid=STAGE_GID,
        )
        ax.add_patch(box)
        middle = (left + right) / 2
        ax.text(
            middle, 2.12, f"{i + 1} · {stage.title}", ha="center", va="center", fontsize=11, weight="bold"
        )
        ax.text(middle, 1.5, stage.objective, ha="center", va="center", fontsize=9)
        ax.text(middle, 0.8, _networks_text(stage), ha="center", va="center", fontsize=8, color="#333333")
        # The data this stage learns from, entering from above.
        data_color = "#fff3c4" if stage.samples_from_policy else "white"
        ax.annotate(
            stage.data,
            xy=(middle, 2.47),
            xytext=(middle, 3.45),
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": data_color, "edgecolor": "#777777"},
            arrowprops={"arrowstyle": "-|>", "color": "#777777", "lw": 1.0},
        )
        if i > 0:  # each stage starts from the previous stage's policy (or its weights)
            ax.annotate(
                "",
                xy=(left, 1.35),
                xytext=(spans[i - 1][1], 1.35),
                arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.6},
            )


def draw_pipelines() -> Figure:
    """Draw the RLHF pipeline (top) above the DPO pipeline (bottom) and return the figure.

    Each stage is a box (gid :data:`STAGE_GID`) listing its objective and the networks it holds; the data it
    learns from enters from above (shaded where the data are sampled from π_θ during training). DPO's second
    stage spans the place of RLHF's reward-model and PPO stages, which it replaces.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.4))
    rlhf_spans = [(0.1, 3.3), (3.9, 7.2), (7.8, 11.9)]
    dpo_spans = [(0.1, 3.3), (3.9, 11.9)]
    _draw_row(top, "RLHF", RLHF_PIPELINE, rlhf_spans, "#dbe9f6")
    _draw_row(bottom, "DPO", DPO_PIPELINE, dpo_spans, "#dcf0dc")
    fig.suptitle("What DPO changes: the reward model and the RL loop become one loss", fontsize=13)
    fig.tight_layout()
    return fig


def count_stage_boxes(fig: Figure) -> list[int]:
    """Number of stage boxes drawn on each axes of ``fig`` (top to bottom), read back from the artists."""
    return [sum(patch.get_gid() == STAGE_GID for patch in ax.patches) for ax in fig.axes]


def plot_reward_kl_frontier(
    curve: dict,
    series: dict | None = None,
    *,
    ax=None,
    title: str = "Expected true reward against KL to the reference",
) -> object:
    """The reward–KL plane: the exact π*_β curve (the frontier no policy can exceed) and methods' points on it.

    Args:
        curve: ``kl`` and ``expected_reward`` sequences of the π*_β curve (e.g.
            :func:`dpo_teach.frontier.reward_kl_curve`), drawn as a black line from π_ref (KL = 0) outwards.
        series: ``{label: {"kl": [...], "expected_reward": [...]}}``, one entry per method, drawn as markers
            joined by a thin line; optional keys ``beta`` (each point annotated "β=…"), ``n`` (annotated
            "N=…"), ``target_kl``/``target_reward`` (a dotted line from each point to the π*_β it aims at,
            marked by a hollow circle), ``marker``, ``color`` and ``line`` (False: markers only).
        ax: the matplotlib axes to draw on (default: a new 7 × 4.5 inch pyplot figure).
        title: the axes' title.

    Returns the axes. The horizontal axis is mean KL(π ‖ π_ref) in nats, the vertical one the mean expected
    true reward (both averaged over prompts).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    kl, reward = list(map(float, curve["kl"])), list(map(float, curve["expected_reward"]))
    order = sorted(range(len(kl)), key=kl.__getitem__)
    ax.plot(
        [kl[i] for i in order],
        [reward[i] for i in order],
        color="black",
        linewidth=1.8,
        label=r"$\pi^*_\beta$ (exact optimum)",
        zorder=2,
    )
    markers = "osD^vP<>Xh"
    for k, (label, points) in enumerate((series or {}).items()):
        xs, ys = list(map(float, points["kl"])), list(map(float, points["expected_reward"]))
        if len(xs) != len(ys):
            raise ValueError(f"series {label!r}: kl has {len(xs)} values but expected_reward has {len(ys)}.")
        color, marker = points.get("color", f"C{k}"), points.get("marker", markers[k % len(markers)])
        joined = len(xs) > 1 and points.get("line", True)
        ax.plot(
            xs,
            ys,
            marker=marker,
            color=color,
            linestyle="-" if joined else "none",
            linewidth=0.8,
            markersize=7,
            label=label,
            zorder=4,
        )
        for key, fmt in (("beta", "β={:.3g}"), ("n", "N={:d}")):
            for x, y, v in zip(xs, ys, points.get(key, ()), strict=False):
                ax.annotate(
                    fmt.format(v),
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, -11),
                    fontsize=7,
                    color=color,
                    gid=POINT_LABEL,
                )
        targets = zip(xs, ys, points.get("target_kl", ()), points.get("target_reward", ()), strict=False)
        for x, y, tx, ty in targets:
            ax.plot([x, tx], [y, ty], linestyle=":", color=color, linewidth=1.0, zorder=3)
            ax.plot([tx], [ty], marker="o", markersize=5, markerfacecolor="none", color=color, zorder=3)
    ax.set_xlabel(r"$\mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}})$  (nats, mean over prompts)")
    ax.set_ylabel(r"expected true reward $E_\pi[r]$")
    ax.set_title(title)
    ax.set_xlim(left=-0.05 * max(kl + [1e-3]))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    place_point_labels(ax)  # no β=/N= label over another or over the legend
    return ax


#: The DPO trainer's metrics (TRL's names) in three panels: the implicit rewards, their margin, the accuracy.
DPO_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        r"implicit rewards  $\hat r = \beta \log \pi_\theta/\pi_{\mathrm{ref}}$",
        ("rewards/chosen", "rewards/rejected"),
    ),
    (r"reward margin  $\hat r_w - \hat r_l$", ("rewards/margins",)),
    (r"accuracy  ($\hat r_w > \hat r_l$)", ("rewards/accuracies",)),
)


class LiveMetricsPlot:
    """A training callback that plots the metrics history and redraws it every ``every`` steps.

    Pass it as ``callback=`` to a trainer: each call appends the metrics dict (e.g. DPO's ``rewards/chosen``);
    every ``every`` calls the figure is redrawn and, inside IPython, shown in *one* output updated in place
    (an ``IPython.display`` handle), so a notebook shows a single figure that grows and keeps the final one.
    ``panels``: ``(title, [metric names])`` per panel, optionally ``(title, [names], "log")`` for a log-scale y
    axis. ``extra`` (optional): a function returning a dict of further values (e.g. an exact KL), called at each
    redraw and stored in that step's entry; a panel may plot its keys. Per-step values are drawn thin, with an
    exponential moving average (weight ``ema`` on the past) on top. Call :meth:`finish` after training for the
    last redraw. ``display=None`` shows the figure only when running inside IPython.
    """

    def __init__(
        self, panels=DPO_PANELS, *, every: int = 10, extra=None, ema: float = 0.9, title=None, display=None
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive int (redraw every that many steps).")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema={ema!r} must be in [0, 1) (0 = no smoothing).")
        panels = tuple((str(name), tuple(keys), *scale) for name, keys, *scale in panels)
        if not panels or not all(keys and all(isinstance(k, str) for k in keys) for _, keys, *_ in panels):
            raise ValueError(
                "panels must be a non-empty sequence of (title, [metric names]) with ≥ 1 name each."
            )
        if any(tuple(scale) not in ((), ("log",)) for _, _, *scale in panels):
            raise ValueError('a panel\'s optional third entry must be "log" (a log-scale y axis).')
        if extra is not None and not callable(extra):
            raise TypeError(f"extra must be a function returning a dict, got {type(extra).__name__}.")
        if display is None:
            from IPython import get_ipython

            display = get_ipython() is not None
        self.panels, self.every, self.extra, self.ema, self.display = panels, every, extra, ema, bool(display)
        self.history: list[dict] = []
        self.draws = 0
        self._drawn_at, self._sparse = 0, set()
        self.figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
        self.axes = list(axes[0])
        if title:
            self.figure.suptitle(title)
        plt.close(self.figure)  # shown through the display handle only, never a second time by the backend
        self._handle = None

    def __call__(self, metrics: dict) -> None:
        self.history.append(dict(metrics))
        if len(self.history) % self.every == 0:
            self.redraw()

    def finish(self) -> Figure:
        """Redraw with every step logged so far (if not just drawn) and return the figure."""
        if self.history and self._drawn_at != len(self.history):
            self.redraw()
        return self.figure

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(steps, values)`` of metric ``key`` over the history (entries without it are skipped)."""
        rows = [(h.get("step", i + 1), float(h[key])) for i, h in enumerate(self.history) if key in h]
        return [s for s, _ in rows], [v for _, v in rows]

    def redraw(self) -> None:
        """Call ``extra``, redraw every panel and update the displayed figure."""
        if self.extra is not None:
            values = dict(self.extra())
            self._sparse.update(values)
            self.history[-1].update(values)
        self._drawn_at = len(self.history)
        for ax, (name, keys, *scale) in zip(self.axes, self.panels, strict=True):
            ax.clear()
            if scale:
                ax.set_yscale("log")
            for k, key in enumerate(keys):
                steps, values = self.series(key)
                if key not in self._sparse:  # logged every step: raw (thin) and smoothed
                    smooth, acc = [], values[0] if values else 0.0
                    for v in values:
                        acc = self.ema * acc + (1 - self.ema) * v
                        smooth.append(acc)
                    ax.plot(steps, values, color=f"C{k}", alpha=0.25, linewidth=0.8)
                    ax.plot(steps, smooth, color=f"C{k}", linewidth=1.6, label=key)
                else:  # from `extra`, logged at redraws only: markers
                    ax.plot(steps, values, color=f"C{k}", marker="o", markersize=3, label=key)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        self.figure.tight_layout()
        self.draws += 1
        if self.display:
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.figure, display_id=True)
            else:
                self._handle.update(self.figure)
