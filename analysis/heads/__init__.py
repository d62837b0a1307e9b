"""Attention heads: scores over a corpus, one head on one prompt, ablation, ranking, attention-output dictionaries.

    from analysis.heads.scan import HeadScanConfig, scan_heads
    result = scan_heads(model, tokens, HeadScanConfig(batch=8))

Modules (public entry points):
    scores     SCORES (the one table of head scores: CLI help, UI tooltips and the scan read it) and their maths
    scan       scan_heads, HeadScanConfig: a forward pass per batch with hooks on every attention pattern
    run        a scan from the store and back: ensure_head_scan, save_scan, scan_tables, load_head_means
    prompt     one head on one prompt: check_head, head_pattern, top_sources
    ablation   ablate_head, MODES (zero / mean), mean_head_outputs
    rank       rank_heads: every head ablated, ranked by the target logit change
    patching   activation_patching: head outputs and residual positions patched from a clean into a corrupted prompt
    dfa        attention-output (hook_z) dictionaries: head_attribution, feature_dfa, feature_heads_table
"""

__all__ = ["ablation", "dfa", "patching", "prompt", "rank", "run", "scan", "scores"]
