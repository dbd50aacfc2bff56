"""The report's PNG plots (matplotlib, headless).

One colour and line style per method throughout (:func:`method_styles`: 20
colours, distinct styles beyond); with several seeds a line is the mean over
seeds and the band its min-max range. Legends sit outside the axes, never on
the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arca.credit.diagnostics import SPARSE_RATIO_BELOW, UNIFORM_GINI_BELOW
from arca.report.runs import FINAL_FRACTION, Method


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path, dpi: int = 120) -> Path:
    # The legends outside the axes are left out of tight_layout, which would
    # shrink the axes to make room for them, and back in for "tight" saving,
    # which grows the image to take them in instead.
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for leg in legends:
        leg.set_in_layout(False)
    fig.tight_layout()
    for leg in legends:
        leg.set_in_layout(True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend_outside(ax: Any, **kw: Any) -> Any:
    """A legend to the right of ``ax``, where it cannot cover data, however many
    entries it has."""
    n = len(kw["handles"]) if "handles" in kw else len(ax.get_legend_handles_labels()[1])
    return ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        ncol=1 + (n - 1) // 18 if n else 1,
        **kw,
    )


#: matplotlib's tab20, strong shades first (tab10's, the familiar ones for up to
#: ten methods), then their light twins: 20 distinct colours.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
#: Each block of ten methods gets its own line style and marker, so that a light
#: shade is told from its strong twin, and colours repeat only with a new style.
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "D", "^", "v")


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str
    marker: str


def method_styles(methods: Sequence[Method]) -> dict[str, Style]:
    """Each method's colour, line style and marker, by its place in ``methods``
    (the report's fixed order), so that one method looks the same in every
    plot of a report; distinct for up to 40 methods."""
    names = list(dict.fromkeys(m.name for m in methods))
    return {
        n: Style(
            PALETTE[i % len(PALETTE)],
            LINESTYLES[i // 10 % len(LINESTYLES)],
            MARKERS[i // 10 % len(MARKERS)],
        )
        for i, n in enumerate(names)
    }


def _mean_series(m: Method, key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    by_step: dict[int, list[float]] = {}
    for r in m.runs:
        for s, v in zip(*r.series(key), strict=True):
            if not math.isnan(v):
                by_step.setdefault(s, []).append(v)
    steps = sorted(by_step)
    vals = [by_step[s] for s in steps]
    return (
        steps,
        [sum(v) / len(v) for v in vals],
        [min(v) for v in vals],
        [max(v) for v in vals],
    )


def _smooth(y: list[float], window: int) -> list[float]:
    if window <= 1:
        return y
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= window:
            acc -= y[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _lines(
    ax: Any, methods: Sequence[Method], key: str, styles: dict[str, Style], smooth: int = 1
) -> bool:
    drawn = False
    for m in methods:
        steps, mean, lo, hi = _mean_series(m, key)
        if not steps:
            continue
        drawn = True
        st = styles[m.name]
        c = st.color
        if smooth > 1:
            ax.plot(steps, mean, color=c, linestyle=st.linestyle, alpha=0.25, linewidth=0.8)
        ax.plot(
            steps,
            _smooth(mean, smooth),
            color=c,
            linestyle=st.linestyle,
            label=m.name,
            linewidth=1.8,
        )
        if len(m.runs) > 1:
            ax.fill_between(steps, lo, hi, color=c, alpha=0.12, linewidth=0)
    ax.set_xlabel("optimizer step")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return drawn


def plot_reward(methods: Sequence[Method], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    longest = max((len(r.metrics) for m in methods for r in m.runs), default=1)
    window = max(1, longest // 10)
    _lines(ax, methods, "reward", method_styles(methods), smooth=window)
    ax.set_ylabel("train reward (mean over the batch)")
    ax.set_title(f"Train reward per step (bold: moving average over {window} steps)")
    _legend_outside(ax)
    return _save(plt, fig, path, dpi=120)


def plot_curves(methods: Sequence[Method], path: Path) -> Path | None:
    """Held-out greedy accuracy during training (``curve.jsonl``): each method's
    mean over seeds, with a band from its lowest to its highest seed; None
    when no run recorded a curve."""
    with_curve = [m for m in methods if any(r.curve for r in m.runs)]
    if not with_curve:
        return None
    plt = _plt()
    styles = method_styles(methods)
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in with_curve:
        by_step: dict[int, list[float]] = {}
        for r in m.runs:
            for step, acc in r.curve:
                by_step.setdefault(step, []).append(acc)
        steps = sorted(by_step)
        mean = [100 * sum(by_step[s]) / len(by_step[s]) for s in steps]
        st = styles[m.name]
        seeds = max(len(v) for v in by_step.values())
        ax.plot(
            steps,
            mean,
            color=st.color,
            linestyle=st.linestyle,
            marker=st.marker,
            markersize=3,
            label=f"{m.name} ({seeds} seed{'s' if seeds > 1 else ''})",
        )
        if seeds > 1:
            lo = [100 * min(by_step[s]) for s in steps]
            hi = [100 * max(by_step[s]) for s in steps]
            ax.fill_between(steps, lo, hi, color=st.color, alpha=0.12, linewidth=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title("Learning curves (band: lowest to highest seed)")
    _legend_outside(ax)
    return _save(plt, fig, path, dpi=120)


def plot_concentration(methods: Sequence[Method], path: Path) -> Path:
    plt = _plt()
    styles = method_styles(methods)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _lines(axes[0], methods, "credit/gini", styles)
    axes[0].set_ylabel("Gini of the token weights")
    axes[0].set_ylim(-0.02, 1.0)
    _threshold(
        axes[0], UNIFORM_GINI_BELOW, f"below: uniform broadcast (Gini < {UNIFORM_GINI_BELOW:g})"
    )
    _lines(axes[1], methods, "credit/effective_ratio", styles)
    axes[1].set_ylabel("effective-token ratio 1/(T sum w^2)")
    axes[1].set_ylim(0.0, 1.05)
    _threshold(axes[1], SPARSE_RATIO_BELOW, f"below: sparse (EffN/T < {SPARSE_RATIO_BELOW:g})")
    axes[0].set_title("Concentration of the trained scheme's weights")
    _legend_outside(axes[1])
    return _save(plt, fig, path, dpi=120)


def _threshold(ax: Any, y: float, text: str) -> None:
    """A regime threshold: a dotted line, named just above it at the right (the
    legend is outside the axes, so nothing else is there but data, which the
    label's backing keeps readable)."""
    from matplotlib.transforms import blended_transform_factory

    ax.axhline(y, color="grey", linestyle=":", linewidth=1)
    ax.text(
        0.99,
        y,
        text,
        transform=blended_transform_factory(ax.transAxes, ax.transData),
        ha="right",
        va="bottom",
        fontsize=8,
        color="dimgrey",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.6, "pad": 1.0},
        zorder=4,
    )


def plot_residual(methods: Sequence[Method], path: Path) -> Path | None:
    """ARCA residual ||h_adapted - h_base|| mean and max per step; None if no
    run logged it."""
    plt = _plt()
    styles = method_styles(methods)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    a = _lines(axes[0], methods, "credit/residual_mean", styles)
    b = _lines(axes[1], methods, "credit/residual_max", styles)
    if not (a or b):
        plt.close(fig)
        return None
    axes[0].set_ylabel("mean over tokens of ||dh_t||")
    axes[1].set_ylabel("max over tokens of ||dh_t||")
    axes[0].set_title("Adapter residual (last hidden layer), per step")
    for ax in axes:
        ax.set_yscale("symlog", linthresh=1e-3)
    _legend_outside(axes[1])
    return _save(plt, fig, path, dpi=120)


def final_point(m: Method) -> tuple[float, float]:
    """Mean over seeds of the trained scheme's Gini and EffN/T over the last
    ``FINAL_FRACTION`` of logged steps."""
    return m.final_mean("credit/gini"), m.final_mean("credit/effective_ratio")


def plot_regimes(methods: Sequence[Method], path: Path) -> Path:
    plt = _plt()
    styles = method_styles(methods)
    fig, ax = plt.subplots(figsize=(9.5, 5))
    ax.axvspan(-0.02, UNIFORM_GINI_BELOW, color="tab:blue", alpha=0.08)
    ax.axhspan(-0.02, SPARSE_RATIO_BELOW, xmin=0, xmax=1, color="tab:red", alpha=0.08)
    ax.text(
        0.005, 0.5, "uniform\nbroadcast", rotation=90, va="center", fontsize=9, color="tab:blue"
    )
    ax.text(0.55, 0.05, "sparse", ha="center", fontsize=9, color="tab:red")
    ax.text(0.55, 0.6, "middle regime", ha="center", fontsize=9, color="tab:green")
    for m in methods:
        g, e = final_point(m)
        if math.isnan(g) or math.isnan(e):
            continue
        # A legend, not annotations: methods in the same regime often coincide.
        ax.scatter(
            [g],
            [e],
            s=70,
            color=styles[m.name].color,
            marker=styles[m.name].marker,
            edgecolor="black",
            zorder=3,
            label=f"{m.name}  ({g:.2f}, {e:.2f})",
        )
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("Gini (final steps)")
    ax.set_ylabel("effective-token ratio (final steps)")
    ax.set_title(
        f"Where each method's credit lands (last {FINAL_FRACTION:.0%} of steps)\n"
        f"thresholds: Gini < {UNIFORM_GINI_BELOW}, EffN/T < {SPARSE_RATIO_BELOW}"
    )
    ax.grid(alpha=0.3)
    _legend_outside(ax, title="method  (Gini, EffN/T)", title_fontsize=8)
    return _save(plt, fig, path, dpi=120)


# ------------------------------------------------ ground truth and drift

#: One colour per scheme in the per-scheme plots.
SCHEME_COLORS = {
    "uniform": "tab:gray",
    "surprisal": "tab:blue",
    "entropy": "tab:orange",
    "divergence": "tab:red",
    "arca": "tab:green",
    "arca_local": "tab:olive",
    "high_entropy": "tab:purple",
}


#: LoRA runs (False) and full fine-tuning runs (True) in the drift plot.
KIND_COLORS = {False: "tab:cyan", True: "tab:brown"}


def _kind_handles(plt: Any, colors: dict[bool, str] | None = None) -> list[Any]:
    """Legend entries for the run kinds (o LoRA, s full fine-tuning): filled
    with ``colors`` (per kind), else hollow."""
    out = []
    for full in (False, True):
        face = colors[full] if colors else "white"
        out.append(
            plt.Line2D(
                [],
                [],
                marker="s" if full else "o",
                linestyle="",
                markerfacecolor=face,
                markeredgecolor=face if colors else "black",
                label="full fine-tuning" if full else "LoRA",
            )
        )
    return out


#: Error lifts below this are drawn at it (log axis).
LIFT_FLOOR = 0.1


def _lift_axis(ax: Any) -> None:
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([0.1, 0.3, 1, 3, 10, 30, 100]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)


def _scheme_color(s: str) -> str:
    return SCHEME_COLORS.get(s, "black")


def plot_credit(methods: Sequence[Method], schemes: Sequence[str], path: Path) -> Path | None:
    """Does concentrated credit land on the error? Every (run, scheme) pair's
    shadow values over the last steps: error lift (log scale) and prefix blame
    relative to uniform's against EffN/T. None without ground truth."""
    pts = []
    for m in methods:
        for s in schemes:
            e = m.final_mean(f"credit/{s}/effective_ratio")
            lift = m.final_mean(f"credit/{s}/error_lift")
            blame = m.final_mean(f"credit/{s}/prefix_blame")
            ref = m.final_mean("credit/uniform/prefix_blame")
            if math.isnan(e) or math.isnan(lift):
                continue
            pts.append((m, s, e, lift, blame / ref if ref > 0 else math.nan))
    if not pts:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    seen: set[str] = set()
    for m, s, e, lift, rel in pts:
        kw = {
            "color": _scheme_color(s),
            "marker": "s" if m.full else "o",
            "s": 45,
            "edgecolor": "black",
            "linewidth": 0.4,
            "zorder": 3,
        }
        label = s if s not in seen else None
        seen.add(s)
        axes[0].scatter([e], [max(lift, LIFT_FLOOR)], label=label, **kw)
        axes[1].scatter([e], [rel], **kw)
    _lift_axis(axes[0])
    axes[0].text(1.0, 1.0, " uniform", va="bottom", ha="right", fontsize=8, color="grey")
    axes[0].set_ylabel("error lift: T x weight on the first wrong token")
    axes[1].axhline(1.0, color="grey", linestyle=":", linewidth=1)
    axes[1].text(1.0, 1.0, " uniform", va="bottom", ha="right", fontsize=8, color="grey")
    axes[1].set_ylabel("prefix blame / uniform's")
    for ax in axes:
        ax.axvline(SPARSE_RATIO_BELOW, color="tab:red", linestyle=":", linewidth=1)
        ax.set_xlabel("EffN/T (concentration; left of the red line: sparse)")
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_title("Credit on the first wrong token (wrong completions)")
    axes[1].set_title("Credit on the correct prefix (wrong completions; lower is better)")
    # One legend, schemes (colours) then run kinds (markers), right of the plots.
    handles = axes[0].get_legend_handles_labels()[0] + _kind_handles(plt)
    _legend_outside(axes[1], handles=handles, title="scheme; run kind", title_fontsize=8)
    fig.suptitle(
        "Each point: one run's shadow values for one scheme, last 10% of steps", fontsize=9
    )
    return _save(plt, fig, path, dpi=120)


def plot_drift(methods: Sequence[Method], schemes: Sequence[str], path: Path) -> Path | None:
    """Concentration (EffN/T) and, with ground truth, error lift of every
    scheme against the drift from the initial policy, one point per logged
    step of every run: LoRA and full fine-tuning compared at equal drift, not
    at equal steps. None if no run logged its drift."""
    show = [s for s in schemes if s != "uniform"]
    runs = [(m, r) for m in methods for r in m.runs]
    if not show or not any(r.series("credit/drift_kl")[0] for _, r in runs):
        return None
    has_truth = any(r.series(f"credit/{s}/error_lift")[0] for _, r in runs for s in show)
    rows = [("effective_ratio", "EffN/T")] + ([("error_lift", "error lift")] if has_truth else [])
    plt = _plt()
    fig, axes = plt.subplots(
        len(rows), len(show), figsize=(2.9 * len(show), 2.6 * len(rows)), squeeze=False
    )
    for j, s in enumerate(show):
        for i, (key, label) in enumerate(rows):
            ax = axes[i][j]
            for m, r in runs:
                steps, drift = r.series("credit/drift_kl")
                by = dict(zip(*r.series(f"credit/{s}/{key}"), strict=True))
                xy = [(d, by[st]) for st, d in zip(steps, drift, strict=True) if st in by]
                if key == "error_lift":  # a lift of 0 has no place on a log axis
                    xy = [(x, max(y, LIFT_FLOOR)) for x, y in xy]
                if not xy:
                    continue
                ax.scatter(
                    [x for x, _ in xy],
                    [y for _, y in xy],
                    s=9,
                    alpha=0.55,
                    color=KIND_COLORS[m.full],
                    marker="s" if m.full else "o",
                    linewidths=0,
                )
            ax.set_xscale("symlog", linthresh=1e-4)
            ax.grid(alpha=0.3)
            if key == "error_lift":
                _lift_axis(ax)
            if i == 0:
                ax.set_title(s, fontsize=10)
            if j == 0:
                ax.set_ylabel(
                    label if key != "error_lift" else f"{label} (< {LIFT_FLOOR:g} drawn at it)"
                )
            if i == len(rows) - 1:
                ax.set_xlabel("drift: KL from initial policy")
    _legend_outside(axes[0][-1], handles=_kind_handles(plt, KIND_COLORS))
    fig.suptitle(
        "Each point: one logged step of one run (shadow values of each scheme)", fontsize=9
    )
    return _save(plt, fig, path, dpi=110)
