"""The Markdown report, for papers and issues: text and tables, figures as PNG files beside it.

`render_markdown` returns the text and the figures it refers to (relative PNG path -> figure dict), so the
caller decides whether PNGs can be made (kaleido needs Chromium). Active tokens of an example are **bold**;
the peak token carries its activation.
"""
from __future__ import annotations

import math
import re

from analysis.reports.collect import FeatureEntry, Report
from analysis.reports.extras import SteeringRun
from analysis.reports.figures import feature_figures, fvu_vs_l0, kl_per_position
from analysis.reports.graphs import (
    FAITHFULNESS,
    FIGURE,
    GraphEntry,
    facts,
    graph_figure_dict,
    links_to_card,
    node_rows,
    not_used_words,
)
from analysis.reports.task_evals import SECTION
from analysis.task_view import figures_table, model_check_words, row_format
from store.queries import Example, Ranked

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def md(text) -> str:
    """Text safe in a Markdown paragraph or table cell: markup characters escaped, lines joined."""
    text = str(text).replace("&", "&amp;")
    return _SPECIAL.sub(r"\\\1", text).replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def num(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "-" * len(header)
    marks = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |",
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def example_md(ex: Example) -> str:
    """The window's text with runs of active tokens in bold; the peak token's value in brackets."""
    if not ex.tokens:
        return "_token text not in the store_"
    peak, out, run = ex.position - ex.window_start, [], []

    def close() -> None:
        if run:
            text = "".join(run)
            stripped = text.lstrip()  # CommonMark needs ** right next to the text
            out.append(text[:len(text) - len(stripped)] + f"**{stripped}**" if stripped else text)
            run.clear()

    for i, (token, act) in enumerate(zip(ex.tokens, ex.token_acts)):
        if act is None or math.isnan(act):
            continue
        if act > 0:
            run.append(md(token) + (f" ⟨{act:.3g}⟩" if i == peak else ""))
        else:
            close()
            out.append(md(token))
    close()
    return "".join(out)


def _token(r: Ranked) -> str:
    return f"“{md(r.text if r.text is not None else f'#{r.id}')}”"


def _links(rows: list[Ranked], ids: set[int], spec: str) -> str:
    items = [(f"[#{r.id}](#f-{r.id})" if r.id in ids else f"#{r.id}") + f" ({num(r.value, spec)})" for r in rows]
    return ", ".join(items) or "none"


def _run_md(run: SteeringRun, images: dict[str, dict] | None, folder: str) -> list[str]:
    lines = [f"#### Steering run {md(run.run_id)}", "", f"**Prompt:** {md(run.prompt)}", ""]
    width = max(len(run.default_texts), len(run.steered_texts))
    rows = [[md(run.default_texts[i]) if i < len(run.default_texts) else "",
             md(run.steered_texts[i]) if i < len(run.steered_texts) else ""] for i in range(width)]
    lines += _table(["default", "steered"], rows)
    facts = [[md(k), num(v)] for k, v in run.measures.items()] + [[md(k), md(v)] for k, v in run.settings.items()]
    lines += _table(["measure / setting", "value"], facts) if facts else []
    fig = kl_per_position(run)
    if fig and images is not None:
        images[f"{folder}/steering_{run.run_id}_kl.png"] = fig
        lines += [f"![KL per position]({folder}/steering_{run.run_id}_kl.png)", ""]
    return lines


def explanations_md(entry: FeatureEntry) -> list[str]:
    """Each explanation (escaped) and a table of its scores beside their baselines."""
    lines = []
    for e in entry.explanations:
        lines += [f"**Explanation** ({md(e.explainer)}): {md(e.text)}", ""]
        if e.scores:
            lines += _table(["scorer", "metric", "score", "baseline", "examples"],
                            [[md(s.scorer), md(s.metric), num(s.value, ".3f"), num(s.baseline, ".3f"),
                              f"{s.n_examples:,}"] for s in e.scores], "--rrr")
    if lines:
        lines += ["_Scores on held-out examples; baseline: another feature's explanation scored the same way._", ""]
    return lines


def _feature_md(entry: FeatureEntry, report: Report, images: dict[str, dict] | None, folder: str) -> list[str]:
    c, ids = entry.card, report.feature_ids
    title = md(c.label) if c.label else "_unlabelled_"
    lines = [f'<a id="f-{c.feature}"></a>', "", f"## Feature {c.feature}: {title}", ""]
    if c.notes:
        lines += ["> " + md(c.notes), ""]
    lines += explanations_md(entry)
    lines += _table(["density", "fires on", "mean act", "max act", "decoder norm", "max decoder cos"],
                    [[num(c.density, ".3%"), f"{c.count:,} / {c.n_tokens:,}", num(c.mean_act), num(c.max_act),
                      num(c.decoder_norm), num(c.max_decoder_cos, ".3f")]], "rrrrrr")
    for name, fig in feature_figures(entry).items() if images is not None else ():
        rel = f"{folder}/feature_{c.feature}_{name}.png"
        images[rel] = fig
        lines += [f"![{fig['layout']['title']['text']}]({rel})", ""]
    lines += ["**Top activations**", ""]
    lines += _table(["act", "context"], [[num(e.activation, ".3g"), example_md(e)] for e in c.top_examples], "r")
    if c.quantile_examples:
        lines += ["**Samples across activation bands**", ""]
        lines += _table(["band", "act", "context"], [[str(e.band), num(e.activation, ".3g"), example_md(e)]
                                                     for e in c.quantile_examples], "rr")
    n = max(len(c.promoted), len(c.suppressed))

    def cell(rs, i, f):
        return f(rs[i]) if i < len(rs) else ""

    lines += _table(["promoted", "logit", "suppressed", "logit"], [
        [cell(c.promoted, i, _token), cell(c.promoted, i, lambda r: num(r.value, "+.3f")),
         cell(c.suppressed, i, _token), cell(c.suppressed, i, lambda r: num(r.value, "+.3f"))]
        for i in range(n)], "-r-r")
    lines += [f"**Decoder neighbours (cosine):** {_links(c.decoder_neighbors, ids, '.3f')}", "",
              f"**Co-occurring features (Jaccard):** {_links(c.cooccurring, ids, '.3f')}", ""]
    if c.mp_parents:
        lines += [f"**Likely parents (times followed):** {_links(c.mp_parents, ids, ',.0f')}", ""]
    if report.dictionary.has_codes:
        lines += [f"**Code usage:** {c.count:,} tokens ({num(c.density, '.3%')})", ""]
    for run in report.steering:
        if run.run_id in entry.steering:
            lines += _run_md(run, images, folder)
    return lines


def _summary_md(report: Report, images: dict[str, dict] | None, folder: str) -> list[str]:
    s = report.dictionary
    facts = [("model", s.model), ("hook", s.hook), ("architecture", s.arch), ("d_in", s.d_in), ("d_sae", s.d_sae),
             ("k", s.k), ("corpus", s.corpus), ("analysed tokens", f"{s.n_tokens:,}")]
    lines = [f"## Dictionary {md(s.name)}", ""]
    lines += _table(["", ""], [[k, md(v) if v not in (None, "") else "–"] for k, v in facts])
    if s.metrics:
        lines += _table(["metric", "value"], [[md(k), num(v)] for k, v in s.metrics.items()], "-r")
    fig = fvu_vs_l0(s)
    if fig and images is not None:
        images[f"{folder}/fvu_vs_l0.png"] = fig
        lines += [f"![FVU vs L0]({folder}/fvu_vs_l0.png)", ""]
    if s.pareto is not None:
        front = "on" if s.pareto else "not on"
        lines += [f"Placed among {len(s.peers)} evaluated dictionaries: {front} the FVU–L0 Pareto front.", ""]
    return lines


def _graph_md(entry: GraphEntry, report: Report, images: dict[str, dict] | None, folder: str) -> list[str]:
    name, ids, r = report.dictionary.name, report.feature_ids, entry.row
    lines = [f'<a id="graph-{r.id}"></a>', "", f"## Attribution graph #{r.id}", ""]
    unused = not_used_words(entry, name)
    lines += [f"_{md(unused)}_", ""] if unused else []
    lines += _table(["", ""], [[md(k), md(v)] for k, v in facts(entry)])
    lines += _table(["recovered", "top removed", "ablation"],
                    [[num(r.recovered, ".1%"), num(r.top_removed, ".1%"), md(r.ablation)]], "rr-")
    lines += [f"_{md(FAITHFULNESS)}_", ""]
    if images is not None:
        rel = f"{folder}/graph_{r.id}.png"
        images[rel] = graph_figure_dict(entry)
        lines += [f"![Attribution graph #{r.id}]({rel})", "", f"_{md(FIGURE)}_", ""]
    lines += ["**Strongest nodes**", ""]
    lines += _table(["node", "token@pos", "attribution", "activation", "label"], [
        [f"[{md(n.node_id)}](#f-{n.feature})" if links_to_card(n, name, ids) else md(n.node_id), md(n.where),
         num(n.attribution), num(n.activation), md(n.label)] for n in node_rows(entry)], "--rr-")
    return lines


def _task_evals_md(report: Report) -> list[str]:
    if not report.task_evals:
        return []
    lines = [f'<a id="{SECTION}"></a>', "", "## Task evaluations", ""]
    lines += [line for n in report.task_eval_notes for line in (f"_{md(n)}_", "")]
    for entry in report.task_evals:
        columns, rows = figures_table(entry.picked, entry.peers)
        lines += [f"### {md(entry.picked.run)}", "", md(model_check_words(entry.picked.result)), ""]
        lines += _table(["figure", *map(md, columns)],
                        [[md(label), *(num(c, row_format(label)) for c in cells)] for label, cells in rows],
                        "-" + "r" * len(columns))
        lines += [f"Reproduce it: `{entry.command}`", ""]
    return lines


def render_markdown(report: Report, folder: str = "report_files",
                    with_images: bool = True) -> tuple[str, dict[str, dict]]:
    """(Markdown text, {relative PNG path: figure}) for the report; `folder` is where the PNGs will lie.

    with_images=False leaves the figures out (no browser to draw them) and says so under the title.
    """
    images: dict[str, dict] | None = {} if with_images else None
    lines = [f"# SparseScope report: {md(report.dictionary.name)}", "",
             f"{len(report.features)} features · model {md(report.dictionary.model)} · generated "
             f"{md(report.generated)}", ""]
    if not with_images:
        lines += ["_Figures left out: drawing them needs Chromium; the HTML report has them all._", ""]
    lines += ["## Contents", ""]
    lines += [f"- [Feature {f.card.feature}](#f-{f.card.feature}) {md(f.card.label)}".rstrip() for f in report.features]
    lines += [f"- [Attribution graph #{g.row.id}](#graph-{g.row.id})" for g in report.graphs]
    lines += [f"- [Task evaluations](#{SECTION})"] if report.task_evals else []
    lines += [""] + _summary_md(report, images, folder)
    loose = [r for r in report.steering if not any(r.run_id in f.steering for f in report.features)]
    if loose:
        lines += ["## Steering runs", ""] + [line for r in loose for line in _run_md(r, images, folder)]
    if report.heads is not None:
        lines += [f"## Attention head scores of {md(report.heads.model)}", ""]
        for score, matrix in report.heads.scores.items():
            lines += [f"**{md(score)}**", ""]
            lines += _table(["layer"] + [f"H{h}" for h in range(report.heads.n_heads)],
                            [[f"L{i}"] + [num(v, ".2f") for v in row] for i, row in enumerate(matrix)],
                            "r" * (report.heads.n_heads + 1))
    for graph in report.graphs:
        lines += _graph_md(graph, report, images, folder)
    lines += _task_evals_md(report)
    for entry in report.features:
        lines += _feature_md(entry, report, images, folder)
    return "\n".join(lines) + "\n", images or {}
