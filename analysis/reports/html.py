"""The HTML report: one self-contained file that opens in any browser with no network and no install.

plotly.js is inlined once; every figure is a placeholder div plus an entry in one JSON block that a short
script draws in small batches (a 100-feature report stays responsive while it renders) and then marks
`<body data-plots="done">`, which the PDF printer and the browser test wait for. Nothing refers to the
network: no CDN, no web fonts, no images by URL.
"""
from __future__ import annotations

import json
from functools import lru_cache

from analysis.reports.collect import Report
from analysis.reports.figures import fvu_vs_l0, head_heatmap
from analysis.reports.graphs import (
    FAITHFULNESS,
    FIGURE,
    GraphEntry,
    NodeRow,
    facts,
    graph_figure_dict,
    links_to_card,
    node_rows,
    not_used_words,
)
from analysis.reports.html_feature import esc, feature_html, fmt, steering_html
from analysis.reports.task_evals import SECTION, TaskEvalEntry
from analysis.task_view import figure_words, figures_table, model_check_words, row_format

_CSS = """
:root{--ink:#1d232a;--muted:#6b7280;--line:#e5e7eb;--accent:#d95f02}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
color:var(--ink);margin:0 auto;max-width:1180px;padding:18px 22px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 8px}h3{font-size:15px}h4{font-size:13px;margin:12px 0 4px}
a{color:#1f5fa8}.muted{color:var(--muted)}code{font:12px ui-monospace,Menlo,Consolas,monospace}
section{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:14px 0}
.cols{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.cols>*{flex:1 1 300px;min-width:0}
table{border-collapse:collapse}
th,td{padding:2px 8px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600;padding:4px 0}
.plots{flex:2 1 420px}.plot{min-height:200px}
.ex{display:flex;gap:10px;font:12.5px/1.9 ui-monospace,Menlo,Consolas,monospace;border-bottom:1px dotted var(--line)}
.ex .act{flex:0 0 58px;text-align:right;color:var(--muted)}.ex .ctx{white-space:pre-wrap;word-break:break-word}
mark{background:rgba(255,112,0,var(--a));color:inherit;border-radius:2px;padding:0 1px}
mark.pk{outline:1.5px solid var(--accent)}.band{margin-top:6px;font-size:12px;font-weight:600}
ul.chips{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:4px 12px}
pre.gen{white-space:pre-wrap;background:#f6f7f9;padding:8px;border-radius:6px;margin:4px 0}
.notes{white-space:pre-wrap;background:#fffbe6;padding:6px 10px;border-radius:6px}
.expl{background:#f0f6ff;padding:4px 10px;border-radius:6px;margin:6px 0}.expl p{margin:4px 0}
nav ol{columns:3 260px;padding-left:22px}.run{border-top:1px dashed var(--line);margin-top:10px}
p.top{text-align:right;margin:6px 0 0;font-size:12px}
@media print{body{max-width:none;padding:0}section.card{break-before:page}.modebar-container{display:none}
.ex,.plot,table,.run{break-inside:avoid}}
"""

_RENDER = """
(function(){
  var specs = JSON.parse(document.getElementById('report-figures').textContent), i = 0;
  var config = {displaylogo: false, responsive: true};
  function next() {
    var end = Math.min(i + 6, specs.length);
    for (; i < end; i++) Plotly.newPlot(specs[i].id, specs[i].fig.data, specs[i].fig.layout, config);
    if (i < specs.length) setTimeout(next, 0); else document.body.setAttribute('data-plots', 'done');
  }
  if (window.Plotly) next(); else document.body.setAttribute('data-plots', 'failed');
})();
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js from the installed plotly package (no CDN), read once per process."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def json_for_script(value) -> str:
    """JSON safe inside a <script> element: '<' only occurs in strings, where \\u003c means the same."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str).replace("<", "\\u003c")


class Page:
    """Collects figure specs while the body is written, so they end up in one JSON block."""

    def __init__(self):
        self.figures: list[dict] = []

    def plot(self, fig: dict, name: str) -> str:
        plot_id = f"plot-{name}"
        self.figures.append({"id": plot_id, "fig": _finite(fig)})
        return f'<div class="plot" id="{esc(plot_id)}"></div>'


def _finite(value):
    """NaN and infinities become null (JSON has neither; plotly leaves nulls as gaps)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _position(report: Report) -> str:
    s = report.dictionary
    me = next((p for p in s.peers if p.name == s.name), None)
    if me is None:
        return '<p class="muted">No FVU/L0 metrics for this dictionary, so it is not placed among the others.</p>'
    fvu_rank = 1 + sum(p.fvu < me.fvu for p in s.peers)
    l0_rank = 1 + sum(p.l0 < me.l0 for p in s.peers)
    front = "on" if s.pareto else "not on"
    return (f"<p>Among the workspace's {len(s.peers)} evaluated dictionaries: FVU rank {fvu_rank} and L0 rank "
            f"{l0_rank} (1 = lowest); {front} the FVU–L0 Pareto front.</p>")


def _summary(report: Report, page: Page) -> str:
    s = report.dictionary
    facts = [("model", s.model), ("hook", s.hook), ("architecture", s.arch), ("d_in", s.d_in),
             ("d_sae", s.d_sae), ("k", s.k), ("source", s.source), ("corpus", s.corpus),
             ("analysed tokens", f"{s.n_tokens:,}")]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{fmt(v) if v not in (None, '') else '–'}</td></tr>" for k, v in facts)
    metrics = "".join(f'<tr><th>{esc(k)}</th><td class="num">{fmt(v, ".4g")}</td></tr>'
                      for k, v in s.metrics.items())
    fig = fvu_vs_l0(s)
    plot = page.plot(fig, "fvu-l0") if fig else ""
    return (f'<section id="summary"><h2>Dictionary {esc(s.name)}</h2><div class="cols">'
            f'<table class="stats"><caption>about</caption><tbody>{rows}</tbody></table>'
            f'<table class="stats"><caption>metrics</caption><tbody>{metrics or "<tr><td>none</td></tr>"}'
            f'</tbody></table></div>{_position(report)}{plot}</section>')


def _toc(report: Report) -> str:
    items = "".join(f'<li><a href="#f-{f.card.feature}">Feature {f.card.feature}</a> '
                    f'{esc(f.card.label) if f.card.label else ""} <span class="muted">'
                    f'{fmt(f.card.density, ".2%")}</span></li>' for f in report.features)
    extra = "".join(f'<li><a href="#{sid}">{title}</a></li>' for sid, title in _extra_sections(report))
    return f'<nav id="toc"><h2>Contents</h2><ol>{items}</ol><ul>{extra}</ul></nav>'


def _extra_sections(report: Report) -> list[tuple[str, str]]:
    out = [("summary", "Dictionary summary")]
    if _loose_runs(report):
        out.append(("steering", "Steering runs"))
    if report.heads is not None:
        out.append(("heads", "Attention head scores"))
    out += [(f"graph-{g.row.id}", f"Attribution graph #{g.row.id}") for g in report.graphs]
    if report.task_evals:
        out.append((SECTION, "Task evaluations"))
    return out


def _loose_runs(report: Report):
    attached = {r for f in report.features for r in f.steering}
    return [r for r in report.steering if r.run_id not in attached]


def _heads(report: Report, page: Page) -> str:
    heads = report.heads
    if heads is None:
        return ""
    plots = "".join(page.plot(head_heatmap(heads, score), f"heads-{i}") for i, score in enumerate(heads.scores))
    groups = ""
    if len(set(heads.kv_groups)) > 1:
        groups = "<p class='muted'>Grouped-query attention, KV group of each head: " + ", ".join(
            f"H{h}→{g}" for h, g in enumerate(heads.kv_groups)) + "</p>"
    return (f'<section id="heads"><h2>Attention head scores of {esc(heads.model)}</h2>'
            f'<p class="muted">measured on corpus {esc(heads.corpus)}</p>'
            f'<div class="cols">{plots}</div>{groups}</section>')


def _node(row: NodeRow, dictionary: str, in_report: set[int]) -> str:
    """A node id, linking to the feature's card when the report holds it (like the report's other links)."""
    return f'<a href="#f-{row.feature}">{esc(row.node_id)}</a>' if links_to_card(row, dictionary, in_report) \
        else esc(row.node_id)


def _graph(entry: GraphEntry, report: Report, page: Page) -> str:
    name, in_report, r = report.dictionary.name, report.feature_ids, entry.row
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts(entry))
    scores = (f'<table class="stats"><caption>faithfulness ({esc(r.ablation)} ablation)</caption><tbody>'
              f'<tr><th>recovered</th><td class="num">{fmt(r.recovered, ".1%")}</td></tr>'
              f'<tr><th>top removed</th><td class="num">{fmt(r.top_removed, ".1%")}</td></tr></tbody></table>')
    unused = not_used_words(entry, name)
    nodes = "".join(
        f'<tr><td>{_node(n, name, in_report)}'
        f'</td><td><code>{esc(n.where)}</code></td><td class="num">{fmt(n.attribution, ".4g")}</td>'
        f'<td class="num">{fmt(n.activation, ".4g")}</td><td>{esc(n.label)}</td></tr>' for n in node_rows(entry))
    return (f'<section id="graph-{r.id}" class="graph"><h2>Attribution graph #{r.id}</h2>'
            f'{f"<p class=muted>{esc(unused)}</p>" if unused else ""}<div class="cols">'
            f'<table class="stats"><tbody>{rows}</tbody></table>{scores}</div>'
            f'<p class="muted">{esc(FAITHFULNESS)}</p>{page.plot(graph_figure_dict(entry), f"graph-{r.id}")}'
            f'<p class="muted">{esc(FIGURE)}</p><table class="nodes"><caption>strongest nodes</caption><thead><tr>'
            f'<th>node</th><th>token@pos</th><th>attribution</th><th>activation</th><th>label</th></tr></thead>'
            f'<tbody>{nodes}</tbody></table></section>')


def _task_eval(entry: TaskEvalEntry, i: int, page: Page) -> str:
    columns, rows = figures_table(entry.picked, entry.peers)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(f"<tr><th>{esc(label)}</th>" + "".join(f'<td class="num">{fmt(c, row_format(label))}</td>'
                                                         for c in cells) + "</tr>" for label, cells in rows)
    result = entry.picked.result
    return (f'<h3>{esc(entry.picked.run)}</h3><p>{esc(model_check_words(result))}</p>'
            f'{page.plot(entry.figure_dict(), f"task-eval-{i}")}<p class="muted">{esc(figure_words(result))}</p>'
            f'<table class="stats"><thead><tr><th>figure</th>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p>Reproduce it: <code>{esc(entry.command)}</code></p>')


def _task_evals(report: Report, page: Page) -> str:
    if not report.task_evals:
        return ""
    notes = "".join(f'<p class="muted">{esc(n)}</p>' for n in report.task_eval_notes)
    return (f'<section id="{SECTION}"><h2>Task evaluations</h2>{notes}'
            f'{"".join(_task_eval(e, i, page) for i, e in enumerate(report.task_evals))}</section>')


def render_html(report: Report) -> str:
    """The whole report as one HTML document (str)."""
    page = Page()
    summary = _summary(report, page)
    cards = "".join(feature_html(f, report, page.plot) for f in report.features)
    loose = _loose_runs(report)
    steering = (f'<section id="steering"><h2>Steering runs</h2>{"".join(steering_html(r, page.plot) for r in loose)}'
                f'</section>') if loose else ""
    heads = _heads(report, page)
    graphs = "".join(_graph(g, report, page) for g in report.graphs)
    graphs += _task_evals(report, page)
    title = f"SparseScope report: {report.dictionary.name}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f'<style>{_CSS}</style><script>{plotly_js()}</script></head><body>'
            f'<header><h1>{esc(title)}</h1><p class="muted">{len(report.features)} features · model '
            f'{esc(report.dictionary.model)} · generated {esc(report.generated)} by SparseScope</p></header>'
            f'{_toc(report)}{summary}{steering}{heads}{graphs}{cards}'
            f'<script type="application/json" id="report-figures">{json_for_script(page.figures)}</script>'
            f'<script>{_RENDER}</script></body></html>')
