"""Pareto report of a sweep: PNGs (params, MACs), an interactive HTML page and a CSV, drawn from one
``orchestrator.table.ParetoTable``.

A failed trial may carry None metrics and then only appears in the CSV. Costs are ratios to the single-domain
backbone, so 1.0 marks its size.
"""

from __future__ import annotations

import csv
import math
import os
from itertools import cycle
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from bap import metrics as M
from bap.config import BASELINES, SHARING_OPTIONS
from orchestrator.pareto import group_points, pareto_front
from orchestrator.table import ACCURACY, COSTS, ParetoTable, complete, front_accuracy, group_key
from orchestrator.trial_keys import BACKBONE, BUDGET, DOMAIN_SET, METHOD

FIELDS = (
    "run_id", DOMAIN_SET, BACKBONE, METHOD, BUDGET,
    M.ACC_MEAN, M.PARAMS_TOTAL, M.PARAMS_RATIO, M.MACS_MEAN, M.MACS_RATIO,
)
COST_LABELS = {  # cost name -> (its name in a title, its axis label)
    "params": ("parameters", "parameters (ratio to the single-domain backbone, ×)"),
    "macs": ("MACs", "mean MACs per image (ratio to the single-domain backbone, ×)"),
}
ACC_LABEL = "mean top-1 accuracy over domains (%)"
# One colour per method, in bap.config's order: none grey, then the losses and the baselines from matplotlib's tab20
# (dark shades first), so every plot of every sweep reads the same and a method bap adds gets its own.
_NONE_COLOR = "#7f7f7f"
_TAB20 = [to_hex(c) for c in colormaps["tab20"].colors]
_PALETTE = [c for c in _TAB20[0::2] + _TAB20[1::2] if c not in (_NONE_COLOR, "#c7c7c7")]  # the greys are none's
METHOD_COLORS = {"none": _NONE_COLOR, **dict(zip([m for m in SHARING_OPTIONS if m != "none"], cycle(_PALETTE)))}
# (matplotlib, plotly) marker shapes: circles for the learned methods; each baseline its own, so the baselines read
# apart at a glance.
_BASELINE_SHAPES = (("X", "x"), ("^", "triangle-up"), ("s", "square"), ("D", "diamond"), ("v", "triangle-down"),
                    ("P", "cross"), ("p", "pentagon"), ("*", "star"))
_CIRCLE = ("o", "circle")
METHOD_MARKERS = {**{m: _CIRCLE for m in SHARING_OPTIONS}, **dict(zip(BASELINES, cycle(_BASELINE_SHAPES)))}


def _color(method: str) -> str:
    """``METHOD_COLORS``; a method bap no longer has (an old run's) gets a palette colour by its name."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _PALETTE[sum(map(ord, method)) % len(_PALETTE)]  # stable across runs, unlike hash()


def _method_order(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """bap.config's order (none, the losses, the baselines), then any other name alphabetically."""
    names = {str(r[METHOD]) for r in records}
    known = [n for n in SHARING_OPTIONS if n in names]
    return known + sorted(names - set(known))


def _label(record: Mapping[str, Any]) -> str:
    return f"β={float(record[BUDGET]):g} {record[METHOD]}"


def write_csv(table: ParetoTable, path: str) -> str:
    """``table.rows`` as CSV: ``FIELDS``, the two flags, then any extra keys (sorted)."""
    flags = [f"pareto_{cost}" for cost in COSTS]
    extra = sorted({k for r in table.rows for k in r} - set(FIELDS) - set(flags))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, *flags, *extra], restval="")
        writer.writeheader()
        writer.writerows(table.rows)
    return path


def _overlap(a: Tuple[float, ...], b: Tuple[float, ...]) -> float:
    """Intersection area of two (x0, y0, x1, y1) boxes."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _annotate_front(ax: Any, front: Sequence[Mapping[str, Any]], cost_key: str, fontsize: float = 8) -> None:
    """Label each front point at the first nearby spot whose text box covers no earlier label or front marker.

    Greedy, in pixels: enough for the tens of front points a sweep has, without a layout dependency.
    """
    px = ax.figure.dpi / 72.0  # pixels per point
    centres = [ax.transData.transform((r[cost_key], r[ACCURACY])) for r in front]
    marker = 6 * px
    placed: List[Tuple[float, ...]] = [(x - marker, y - marker, x + marker, y + marker) for x, y in centres]
    for r, (x, y) in zip(front, centres):
        text = _label(r)
        w, h = 0.6 * fontsize * len(text), 1.3 * fontsize  # points
        candidates = [(6, 4), (6, -h - 4), (-w - 6, 4), (-w - 6, -h - 4), (6, h + 8), (6, -2 * h - 8)]
        boxes = [(x + dx * px, y + dy * px, x + (dx + w) * px, y + (dy + h) * px) for dx, dy in candidates]
        best = min(range(len(boxes)), key=lambda i: (sum(_overlap(boxes[i], b) for b in placed), i))
        placed.append(boxes[best])
        ax.annotate(text, (r[cost_key], r[ACCURACY]), xytext=candidates[best], textcoords="offset points",
                    fontsize=fontsize, va="bottom", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))


def _half_widths(points: Sequence[Mapping[str, Any]], key: str) -> Optional[List[List[float]]]:
    """Error-bar lengths [below, above] of each point's interval, or None when no point has one."""
    if all(p.get(f"{key}_low") is None for p in points):
        return None
    below = [p[key] - p[f"{key}_low"] if p.get(f"{key}_low") is not None else 0.0 for p in points]
    above = [p[f"{key}_high"] - p[key] if p.get(f"{key}_high") is not None else 0.0 for p in points]
    return [below, above]


def plot_png(table: ParetoTable, cost: str, path: str) -> str:
    """One panel per group: each configuration's mean over its seeds (95% interval bars where there are several)
    coloured by method, single trials faint behind them, the front on the means as a labelled staircase."""
    cost_key, (cost_name, cost_label) = COSTS[cost], COST_LABELS[cost]
    trials = group_points([r for r in table.records if complete(r, cost_key)], group_key)
    groups = group_points([p for p in table.configurations if complete(p, cost_key)], group_key)
    fronts = []
    ncols = max(1, min(3, len(groups)))
    nrows = max(1, math.ceil(len(groups) / ncols))
    fig = Figure(figsize=(7.2 * ncols, 5.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.suptitle(f"Pareto front: mean accuracy vs {cost_name} (up and left is better)", fontsize=12)
    for ax, ((domain_set, backbone), members) in zip(axes, groups.items()):
        several = any(p["seeds"] > 1 for p in members)
        for method in _method_order(members):
            pts = [r for r in members if str(r[METHOD]) == method]
            marker = METHOD_MARKERS.get(method, _CIRCLE)[0]
            if several:
                runs = [r for r in trials[(domain_set, backbone)] if str(r[METHOD]) == method]
                ax.scatter([r[cost_key] for r in runs], [r[ACCURACY] for r in runs], s=10, color=_color(method),
                           marker=marker, alpha=0.25, zorder=2)
            ax.errorbar([r[cost_key] for r in pts], [r[ACCURACY] for r in pts], xerr=_half_widths(pts, cost_key),
                        yerr=_half_widths(pts, ACCURACY), fmt=marker, ms=6, color=_color(method), alpha=0.85,
                        elinewidth=1, capsize=2, label=f"method: {method}" + (" (mean, 95% CI)" if several else ""),
                        zorder=3)
        front = pareto_front(members, front_accuracy, cost_key)
        ax.plot([r[cost_key] for r in front], [r[ACCURACY] for r in front], drawstyle="steps-post", color="black",
                lw=1.2, zorder=2, label="Pareto front")
        ax.scatter([r[cost_key] for r in front], [r[ACCURACY] for r in front], s=90, facecolors="none",
                   edgecolors="black", lw=1.4, zorder=4)
        ax.axvline(1.0, color="tab:red", ls="--", lw=1, label="single-domain backbone (1.0×)", zorder=1)
        # 1.2x: room right of the largest point for its label (a full-budget trial sits just past 1.0)
        ax.set_xlim(left=0, right=max(1.2, 1.2 * max(r[cost_key] for r in members)))
        ax.set_title(f"domains: {domain_set} | backbone: {backbone}", fontsize=10)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(ACC_LABEL)
        ax.margins(y=0.1)  # room for the top label
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fronts.append((ax, front, cost_key))
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    if not groups:
        axes[0].text(0.5, 0.5, "no completed trial", ha="center", va="center", transform=axes[0].transAxes)
    fig.draw_without_rendering()  # final layout, so data -> pixel transforms are the saved ones
    for ax, front, cost_key in fronts:
        _annotate_front(ax, front, cost_key)
    fig.savefig(path, dpi=120)
    return path


def plot_html(table: ParetoTable, path: str, include_plotlyjs: Any = True) -> str:
    """Interactive version: rows params / MACs, one column per group, hover shows the run and its numbers.

    ``include_plotlyjs=True`` embeds plotly.js (~4 MB) so the page opens offline, e.g. as an MLflow artifact.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = group_points(table.configurations, group_key)
    keys = list(groups) or [("none", "none")]
    fig = make_subplots(
        rows=len(COSTS), cols=len(keys), shared_yaxes=True,
        subplot_titles=[f"{cost}: {ds} | {bb}" for cost in COSTS for ds, bb in keys],
    )
    shown = set()
    hover = ("β=%{customdata[0]} method=%{customdata[1]}, %{customdata[2]} seed(s)<br>acc_mean=%{y:.2f}% "
             "(mean)<br>ratio=%{x:.3f} (mean)<extra></extra>")
    for row, (cost, cost_key) in enumerate(COSTS.items(), start=1):
        cost_label = COST_LABELS[cost][1]
        for col, key in enumerate(keys, start=1):
            members = [r for r in groups.get(key, []) if complete(r, cost_key)]
            for method in _method_order(members):
                pts = [r for r in members if str(r[METHOD]) == method]
                bars = {axis: _half_widths(pts, key) for axis, key in (("x", cost_key), ("y", ACCURACY))}
                fig.add_trace(go.Scatter(
                    x=[r[cost_key] for r in pts], y=[r[ACCURACY] for r in pts], mode="markers",
                    **{f"error_{axis}": dict(type="data", symmetric=False, array=b[1], arrayminus=b[0], thickness=1)
                       for axis, b in bars.items() if b is not None},
                    marker=dict(color=_color(method), size=9,
                                symbol=METHOD_MARKERS.get(method, _CIRCLE)[1]),
                    name=f"method: {method}", legendgroup=method,
                    showlegend=method not in shown, hovertemplate=hover,
                    customdata=[[r.get(BUDGET), method, r.get("seeds")] for r in pts],
                ), row=row, col=col)
                shown.add(method)
            front = pareto_front(members, front_accuracy, cost_key)
            fig.add_trace(go.Scatter(
                x=[r[cost_key] for r in front], y=[r[ACCURACY] for r in front], mode="lines+text",
                line=dict(color="black", shape="hv", width=1.5), text=[_label(r) for r in front],
                textposition="top left", name="Pareto front", legendgroup="front", showlegend="front" not in shown,
                hoverinfo="skip",
            ), row=row, col=col)
            shown.add("front")
            fig.add_vline(x=1.0, line_dash="dash", line_color="red", row=row, col=col)
            fig.update_xaxes(title_text=cost_label, rangemode="tozero", row=row, col=col)
        fig.update_yaxes(title_text=ACC_LABEL, row=row, col=1)
    fig.update_layout(title="Pareto front: accuracy vs cost (red dashed line: single-domain backbone, 1.0×)",
                      height=450 * len(COSTS), width=max(700, 520 * len(keys)), template="plotly_white")
    fig.write_html(path, include_plotlyjs=include_plotlyjs)
    return path


def write_pareto_report(table: ParetoTable, out_dir: str, include_plotlyjs: Optional[Any] = True) -> Dict[str, str]:
    """Write ``pareto_params.png``, ``pareto_macs.png``, ``pareto.html`` and ``pareto.csv``; return name -> path."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for cost in COSTS:
        paths[f"pareto_{cost}.png"] = plot_png(table, cost, os.path.join(out_dir, f"pareto_{cost}.png"))
    paths["pareto.html"] = plot_html(table, os.path.join(out_dir, "pareto.html"), include_plotlyjs)
    paths["pareto.csv"] = write_csv(table, os.path.join(out_dir, "pareto.csv"))
    return paths
