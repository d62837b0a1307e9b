"""The report's plots as plain plotly figure dicts ({"data": [...], "layout": {...}}).

Plain dicts rather than `go.Figure`: plotly.js draws them as they are in the HTML report, kaleido turns the
same dicts into PNGs for Markdown, and building hundreds of them skips plotly.py's validation (~10 ms each).
"""
from __future__ import annotations

from analysis.reports.collect import DictionarySummary, FeatureEntry
from analysis.reports.extras import HeadScores, SteeringRun

Figure = dict
ACCENT = "#d95f02"
BAR = "#4c78a8"
FONT = {"family": "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", "size": 12}


def _layout(title: str, height: int = 260, **extra) -> dict:
    return {"title": {"text": title, "font": {"size": 13}}, "height": height, "font": FONT,
            "margin": {"l": 55, "r": 15, "t": 36, "b": 45}, "plot_bgcolor": "#fafafa",
            "paper_bgcolor": "#ffffff", "showlegend": False, **extra}


def fvu_vs_l0(summary: DictionarySummary) -> Figure | None:
    """Every dictionary of the workspace on FVU against L0, one colour per architecture, this one starred."""
    if not summary.peers:
        return None
    data = []
    for arch in sorted({p.arch for p in summary.peers}):
        peers = [p for p in summary.peers if p.arch == arch]
        data.append({"type": "scatter", "mode": "markers", "name": arch, "x": [p.l0 for p in peers],
                     "y": [p.fvu for p in peers], "text": [p.name for p in peers], "marker": {"size": 9},
                     "customdata": [p.ce_recovered for p in peers],
                     "hovertemplate": "%{text}<br>L0 %{x:.1f}, FVU %{y:.3f}<br>CE recovered %{customdata:.3f}"
                                      f"<extra>{arch}</extra>"})
    me = [p for p in summary.peers if p.name == summary.name]
    if me:
        data.append({"type": "scatter", "mode": "markers+text", "name": "this dictionary",
                     "x": [me[0].l0], "y": [me[0].fvu], "text": [summary.name], "textposition": "top center",
                     "marker": {"size": 18, "symbol": "star", "color": ACCENT, "line": {"width": 1}},
                     "hoverinfo": "skip"})
    return {"data": data, "layout": _layout("FVU vs L0 across the workspace's dictionaries", 320,
                                            showlegend=True, xaxis={"title": {"text": "L0 (active features)"}},
                                            yaxis={"title": {"text": "FVU (lower is better)"}})}


def histogram(entry: FeatureEntry) -> Figure | None:
    """Histogram of the feature's non-zero activations (log-spaced bins, shown as categories)."""
    bins = entry.card.histogram
    if not bins:
        return None
    labels = [f"{lo:.3g}" for lo, _, _ in bins]
    hover = [f"[{lo:.3g}, {hi:.3g}): {count:,}" for lo, hi, count in bins]
    data = [{"type": "bar", "x": labels, "y": [c for _, _, c in bins], "hovertext": hover,
             "hoverinfo": "text", "marker": {"color": BAR}}]
    return {"data": data, "layout": _layout("Activation histogram (non-zero)", xaxis={
        "title": {"text": "activation (bin start)"}, "type": "category"}, yaxis={"title": {"text": "tokens"}})}


def mp_steps(entry: FeatureEntry) -> Figure | None:
    """Matching pursuit: at which pursuit step this atom is chosen."""
    steps = entry.card.mp_steps
    if not steps:
        return None
    data = [{"type": "bar", "x": [s.id for s in steps], "y": [s.value for s in steps], "marker": {"color": BAR}}]
    return {"data": data, "layout": _layout("Pursuit step at which the atom is chosen",
                                            xaxis={"title": {"text": "step"}, "dtick": 1},
                                            yaxis={"title": {"text": "times chosen"}})}


def head_attribution(entry: FeatureEntry) -> Figure | None:
    """Each attention head's share of the feature's pre-activation (attention-output dictionaries)."""
    if not entry.head_attribution:
        return None
    heads, shares = zip(*entry.head_attribution)
    data = [{"type": "bar", "x": list(heads), "y": list(shares), "marker": {"color": ACCENT}}]
    return {"data": data, "layout": _layout("Head attribution (share of pre-activation)",
                                            xaxis={"title": {"text": "head"}, "type": "category"},
                                            yaxis={"title": {"text": "share"}, "range": [0, 1]})}


def head_heatmap(heads: HeadScores, score: str) -> Figure:
    """Layer x head heatmap of one head score."""
    data = [{"type": "heatmap", "z": heads.scores[score], "x": [f"H{h}" for h in range(heads.n_heads)],
             "y": [f"L{layer}" for layer in range(heads.n_layers)], "colorscale": "Viridis",
             "hovertemplate": "%{y} %{x}: %{z:.3f}<extra></extra>"}]
    return {"data": data, "layout": _layout(score.replace("_", " "), 60 + 22 * max(heads.n_layers, 6),
                                            yaxis={"autorange": "reversed"})}


def kl_per_position(run: SteeringRun) -> Figure | None:
    """How far the steered next-token distribution moved from the default one along the generation."""
    if not run.kl_per_position:
        return None
    data = [{"type": "scatter", "mode": "lines+markers", "y": run.kl_per_position, "line": {"color": ACCENT}}]
    return {"data": data, "layout": _layout("KL(default ‖ steered) per generated position", 220,
                                            xaxis={"title": {"text": "generated position"},
                                                   "dtick": max(1, len(run.kl_per_position) // 10)},
                                            yaxis={"title": {"text": "KL"}})}


def feature_figures(entry: FeatureEntry) -> dict[str, Figure]:
    """A feature's figures by short name (used in ids and PNG file names), leaving out empty ones."""
    figs = {"hist": histogram(entry), "mp_steps": mp_steps(entry), "heads": head_attribution(entry)}
    return {name: fig for name, fig in figs.items() if fig is not None}
