"""`sparsescope attribute`: which features, at which tokens, make the model produce a target token; `graphs`
lists the stored attribution graphs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, ForceOpt, WorkspaceOpt, app, console, existing_workspace, quiet

DEFAULT_MODEL = "smollm2-135m-instruct"


@app.command(name="attribute")
def attribute_cmd(
    prompt: Annotated[str, typer.Option(help="Text the model reads; the metric is read at its last token.")],
    target: Annotated[str, typer.Option(help="The next token to explain (exactly one token, e.g. ' Paris').")],
    contrast: Annotated[Optional[str], typer.Option(
        help="A contrast token: the metric becomes logit(target) - logit(contrast).")] = None,
    dictionaries: Annotated[Optional[str], typer.Option(
        help="Dictionaries to splice in, comma-separated (default: the model's first dictionary on each hook).")]
    = None,
    model: Annotated[str, typer.Option(help="Model name.")] = DEFAULT_MODEL,
    max_nodes: Annotated[int, typer.Option(help="At most this many feature nodes in the graph.")] = 50,
    node_share: Annotated[float, typer.Option(
        help="Keep each dictionary's nodes until they carry this share of its total |attribution|.")] = 0.8,
    edge_share: Annotated[float, typer.Option(
        help="Keep the edges until they carry this share of the total |edge weight|.")] = 0.95,
    ablation: Annotated[str, typer.Option(
        help="Baseline of attribution and faithfulness: mean (each node's mean over corpus contexts) or zero.")]
    = "mean",
    corpus: Annotated[str, typer.Option(help="Corpus whose first contexts give the mean baseline.")] = "builtin",
    refine: Annotated[int, typer.Option(
        help="Rounds of swapping feature nodes towards the graph-only model's metric (0: attribution pruning "
             "only).")] = 20,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", help="Also write the graph document to this file (inside the workspace; relative to it).")]
    = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Attribute a target token to dictionary features across layers (attribution patching, Marks et al.):
    node and edge attributions, a pruned graph, its faithfulness by ablation; the graph is stored."""
    from analysis.attribution import AttributionConfig
    from store import session

    space = existing_workspace(ws)
    try:
        config = AttributionConfig(max_nodes=max_nodes, node_share=node_share, edge_share=edge_share,
                                   ablation=ablation, refine=refine)
    except ValueError as exc:
        from store.errors import InputError

        raise InputError(str(exc)) from None
    out = _json_target(space, json_out, force) if json_out else None
    from analysis.attribution import open_request

    lm, sites, tokens, tid, cid, baseline = open_request(space, model, prompt, target, contrast, dictionaries,
                                                         config.ablation, corpus, device)
    result = _run(lm, tokens, sites, tid, cid, baseline, config)
    from analysis.attribution import graph_document
    from store.graphs import save_graph

    with session(space.db_path, read_only=True) as con:
        labels = _labels(con, sites, result.nodes)
    doc = graph_document(lm, prompt, sites, result, config, labels)
    meta = doc["metadata"]
    with session(space.db_path) as con:
        graph_id = save_graph(con, model=model, prompt=prompt, target=meta["target"], contrast=meta["contrast"],
                              dictionaries=meta["dictionaries"], metric=result.metric,
                              recovered=result.faith.recovered, top_removed=result.faith.top_removed,
                              ablation=baseline.kind, graph=doc)
    if out is not None:
        import json

        from store.paths import write_durable

        write_durable(out, json.dumps(doc, indent=1))
    _print(result, sites, doc, graph_id, out)


def _json_target(space, json_out: str, force: bool):
    from pathlib import Path

    from store.errors import InputError
    from store.paths import check_output_file

    path = Path(json_out).expanduser()
    path = path if path.is_absolute() else space.root / path
    if not path.resolve().is_relative_to(space.root.resolve()):
        raise InputError(f"--json {json_out}: write inside the workspace {space.root}")
    return check_output_file(path, force, make_parent=True)


def _run(lm, tokens, sites, tid, cid, baseline, config):
    from tqdm.auto import tqdm

    from analysis.attribution import attribute

    bars = []

    def progress(stage: str, total: int):
        bar = tqdm(total=total, desc=f"attribute: {stage}", disable=quiet(), leave=False)
        bars.append(bar)
        return bar.update

    try:
        return attribute(lm, tokens, sites, tid, cid, baseline, config, progress)
    finally:
        for bar in bars:
            bar.close()


def _labels(con, sites, nodes) -> dict[tuple[str, int], str]:
    """(dictionary, feature) -> its label, else its first explanation, where the store has one."""
    from store.explanations import get_explanations
    from store.queries import feature_summaries

    out = {}
    for site in sites:
        feats = sorted({n.feature for n in nodes if n.feature is not None and sites[n.site] is site})
        if not feats:
            continue
        for row in get_explanations(con, site.name, features=feats):
            out.setdefault((site.name, row.feature), row.text)
        for feature, summary in feature_summaries(con, site.name, feats).items():
            if summary.label:
                out[(site.name, feature)] = summary.label
    return out


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _share(value: float | None) -> str:
    return "n/a (the ablated metric equals the clean one)" if value is None else f"{value:.1%}"


def _print(result, sites, doc, graph_id: int, out) -> None:
    meta, f = doc["metadata"], result.faith
    console.print(Text.assemble(f"{meta['metric_kind']} {result.metric:.3f} for {meta['target']!r}",
                                f" vs {meta['contrast']!r}" if meta["contrast"] is not None else "",
                                f"; {meta['ablation']} ablation ({meta['baseline']})"))
    n_feat = sum(1 for n in result.nodes if n.feature is not None)
    console.print(f"faithfulness: the graph ({n_feat} feature nodes, {len(result.nodes) - n_feat} error nodes, "
                  f"{len(doc['links'])} links) recovers {_share(f.recovered)} of the metric with everything else "
                  f"ablated; ablating its top {f.top_n} feature nodes removes {_share(f.top_removed)}",
                  markup=False, highlight=False)
    if f.pruned is not None:
        console.print(f"  attribution pruning alone (the same budget, before {f.rounds} refinement round(s)) "
                      f"recovered {_share(f.recovered_pruned)}", markup=False, highlight=False)
    table = Table("node", "token@pos", "attribution", "activation", "label / explanation", expand=False,
                  title="top nodes by |attribution|")
    by_id = {n["node_id"]: n for n in doc["nodes"]}
    for node in sorted(result.nodes, key=lambda n: -abs(n.attribution))[:20]:
        from analysis.attribution import node_id

        d = by_id[node_id(sites[node.site], node)]
        table.add_row(Text(d["node_id"]), Text(f"{d['token']!r}@{d['ctx_idx']}"), f"{d['attribution']:+.4f}",
                      f"{d['activation']:.3g}", Text(d.get("label", "")))
    console.print(table)
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(f"graph {graph_id} stored ({seconds})" + (f"; JSON written to {out}" if out else ""),
                  markup=False, highlight=False)


@app.command(name="graphs")
def graphs_cmd(ws: WorkspaceOpt = None):
    """List the stored attribution graphs, newest first."""
    from store import session
    from store.graphs import list_graphs

    space = existing_workspace(ws)
    with session(space.db_path, read_only=True) as con:
        rows = list_graphs(con)
    for r in rows:  # one line each: a table of 13 columns does not fit a terminal
        versus = "" if r.contrast is None else f" vs {r.contrast!r}"
        console.print(f"{r.id}  {r.created:%Y-%m-%d %H:%M}  {r.model}  {r.target!r}{versus}  metric {r.metric:.3f}  "
                      f"recovered {_pct(r.recovered) or 'n/a'}  top removed {_pct(r.top_removed) or 'n/a'}  "
                      f"{r.ablation} ablation  {r.n_nodes} nodes  {r.n_links} links  {','.join(r.dictionaries)}  "
                      f"prompt {r.prompt[:60]!r}", markup=False, highlight=False, soft_wrap=True)
    if not rows:
        console.print("no attribution graphs stored yet (`sparsescope attribute` makes one)")
