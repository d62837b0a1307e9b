"""One feature's card in the HTML report: label, explanations, statistics, plots, examples, logits, neighbours,
extras.

Every piece of text from the store goes through `esc` (html.escape with quotes): labels, notes, explanations,
tokens and steering texts are user or model data and must show as text, never as markup.
"""
from __future__ import annotations

import math
from html import escape
from typing import Callable

from analysis.reports.collect import FeatureEntry, Report
from analysis.reports.extras import SteeringRun
from analysis.reports.figures import feature_figures, kl_per_position
from store.queries import Example, Ranked

Plot = Callable[[dict, str], str]
"""Registers a figure under an id and returns the placeholder div (see html.Page.plot)."""


def esc(value) -> str:
    return escape(str(value), quote=True)


def fmt(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec) if isinstance(value, (int, float)) else esc(value)


def token_text(token: str) -> str:
    """Escaped token with invisible characters made visible (newlines and tabs would break the line)."""
    return esc(token.replace("\n", "↵").replace("\t", "⇥")) or "&#8203;"


def example_html(ex: Example, max_act: float) -> str:
    """A context window with every token shaded by the feature's activation; hover shows the value."""
    peak = ex.position - ex.window_start
    if not ex.tokens:
        values = " ".join(fmt(a, ".3g") for a in ex.token_acts if not math.isnan(a))
        return f'<div class="ex"><span class="act">{fmt(ex.activation, ".3g")}</span>' \
               f'<span class="ctx muted">[token text not in the store] {values}</span></div>'
    parts = []
    for i, (token, act) in enumerate(zip(ex.tokens, ex.token_acts)):
        if act is None or math.isnan(act):
            continue  # past the end of the context
        text = token_text(token)
        if act > 0:
            alpha = min(1.0, act / max_act) if max_act > 0 else 1.0
            cls = ' class="pk"' if i == peak else ""
            parts.append(f'<mark{cls} style="--a:{alpha:.2f}" title="{act:.4g}">{text}</mark>')
        else:
            parts.append(text)
    return f'<div class="ex"><span class="act">{fmt(ex.activation, ".3g")}</span>' \
           f'<span class="ctx">{"".join(parts)}</span></div>'


def _examples(entry: FeatureEntry) -> str:
    card = entry.card
    out = ['<h4>Top activations</h4>']
    out += [example_html(ex, card.max_act) for ex in card.top_examples] or ['<p class="muted">none</p>']
    bands: dict[int | None, list[Example]] = {}
    for ex in card.quantile_examples:
        bands.setdefault(ex.band, []).append(ex)
    if bands:
        out.append('<h4>Samples across activation bands</h4>')
    for band, examples in bands.items():
        acts = [ex.activation for ex in examples]
        out.append(f'<div class="band">band {fmt(band)} <span class="muted">(activations '
                   f'{fmt(min(acts), ".3g")} – {fmt(max(acts), ".3g")})</span></div>')
        out += [example_html(ex, card.max_act) for ex in examples]
    return f'<div class="examples">{"".join(out)}</div>'


def _token_table(title: str, rows: list[Ranked]) -> str:
    body = "".join(f'<tr><td><code>{token_text(r.text if r.text is not None else f"#{r.id}")}</code></td>'
                   f'<td class="num">{fmt(r.value, "+.3f")}</td></tr>' for r in rows)
    return f'<table class="mini"><caption>{esc(title)}</caption><tbody>' \
           f'{body or "<tr><td class=muted>none</td></tr>"}</tbody></table>'


def feature_link(feature: int, in_report: set[int]) -> str:
    """An in-file link when the other feature has a card in this report, plain text otherwise."""
    return f'<a href="#f-{feature}">#{feature}</a>' if feature in in_report else f'<span>#{feature}</span>'


def _ranked_features(title: str, rows: list[Ranked], in_report: set[int], spec: str) -> str:
    items = "".join(f'<li>{feature_link(r.id, in_report)} <span class="muted">{fmt(r.value, spec)}</span></li>'
                    for r in rows)
    return f'<div class="side"><h4>{esc(title)}</h4><ul class="chips">{items or "<li class=muted>none</li>"}' \
           f'</ul></div>'


def _stats(entry: FeatureEntry, has_codes: bool) -> str:
    c = entry.card
    rows = [("density", fmt(c.density, ".3%")), ("fires on", f"{c.count:,} of {c.n_tokens:,} tokens"),
            ("mean activation", fmt(c.mean_act, ".4g")), ("max activation", fmt(c.max_act, ".4g")),
            ("decoder norm", fmt(c.decoder_norm, ".4g")), ("max decoder cosine", fmt(c.max_decoder_cos, ".3f"))]
    if has_codes:
        rows.append(("code usage", f"{c.count:,} tokens ({fmt(c.density, '.3%')})"))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="stats"><tbody>{cells}</tbody></table>'


def steering_html(run: SteeringRun, plot: Plot) -> str:
    """A steering run: prompt, default and steered texts side by side, measures, settings, KL per position."""
    def texts(items: list[str]) -> str:
        return "".join(f'<pre class="gen">{esc(t)}</pre>' for t in items) or '<p class="muted">none stored</p>'

    def table(caption: str, items: dict, spec: str | None) -> str:
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{fmt(v, spec) if spec else esc(v)}</td></tr>"
                       for k, v in items.items())
        return f'<table class="stats"><caption>{caption}</caption><tbody>{rows}</tbody></table>'

    kl = kl_per_position(run)
    return (f'<div class="run" id="run-{esc(run.run_id)}"><h4>Steering run {esc(run.run_id)}</h4>'
            f'<p><b>Prompt</b></p><pre class="gen">{esc(run.prompt)}</pre>'
            f'<div class="cols"><div><p><b>Default</b></p>{texts(run.default_texts)}</div>'
            f'<div><p><b>Steered</b></p>{texts(run.steered_texts)}</div></div>'
            f'<div class="cols">{table("measures", run.measures, ".4g")}{table("settings", run.settings, None)}'
            f'</div>{plot(kl, f"run{run.run_id}-kl") if kl else ""}</div>')


def explanations_html(entry: FeatureEntry) -> str:
    """Each explanation (escaped) with a table of its scores beside their baselines."""
    parts = []
    for e in entry.explanations:
        rows = "".join(f"<tr><td>{esc(s.scorer)}</td><td>{esc(s.metric)}</td><td class=\"num\">{fmt(s.value, '.3f')}"
                       f"</td><td class=\"num\">{fmt(s.baseline, '.3f')}</td><td class=\"num\">{s.n_examples:,}</td>"
                       "</tr>" for s in e.scores)
        table = ('<table class="mini"><thead><tr><th>scorer</th><th>metric</th><th>score</th><th>baseline</th>'
                 f'<th>examples</th></tr></thead><tbody>{rows}</tbody></table>') if rows else ""
        parts.append(f'<div class="expl"><p><b>Explanation</b> <span class="muted">({esc(e.explainer)})</span>: '
                     f'{esc(e.text)}</p>{table}</div>')
    if not parts:
        return ""
    return "".join(parts) + ('<p class="muted">Scores on held-out examples; baseline: another feature\'s '
                             'explanation scored the same way.</p>')


def feature_html(entry: FeatureEntry, report: Report, plot: Plot) -> str:
    card, ids = entry.card, report.feature_ids
    label = esc(card.label) if card.label else '<span class="muted">unlabelled</span>'
    notes = f'<p class="notes">{esc(card.notes)}</p>' if card.notes else ""
    figs = feature_figures(entry)
    plots = "".join(plot(fig, f"f{card.feature}-{name}") for name, fig in figs.items())
    sides = [_ranked_features("Decoder neighbours (cosine)", card.decoder_neighbors, ids, ".3f"),
             _ranked_features("Co-occurring features (Jaccard)", card.cooccurring, ids, ".3f")]
    if card.mp_parents:
        sides.append(_ranked_features("Likely parents (times followed)", card.mp_parents, ids, ",.0f"))
    runs = [r for r in report.steering if r.run_id in entry.steering]
    return (f'<section class="card" id="f-{card.feature}"><h2>Feature {card.feature}: {label}</h2>{notes}'
            f'{explanations_html(entry)}'
            f'<div class="cols">{_stats(entry, report.dictionary.has_codes)}<div class="plots">{plots}</div></div>'
            f'{_examples(entry)}'
            f'<div class="cols">{_token_table("Promoted tokens (logit effect)", card.promoted)}'
            f'{_token_table("Suppressed tokens", card.suppressed)}</div>'
            f'<div class="cols">{"".join(sides)}</div>'
            + "".join(steering_html(r, plot) for r in runs)
            + '<p class="top"><a href="#toc">↑ contents</a></p></section>')
