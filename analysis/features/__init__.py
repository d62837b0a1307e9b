"""Feature statistics: the one streaming pass of a dictionary over a corpus (dashboards), and what reads it.

    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    summary = analyze_dictionary(ws, AnalyzeRequest(dictionary="demo-topk", tokens=200_000))

Modules (public entry points; everything else is internal to the package):
    analyze      `sparsescope analyze`: AnalyzeRequest, analyze_dictionary, analyse_batch, search_codes
    stats        FeatureStatsAccumulator, StatsConfig: counts, histograms, top and band examples per feature
    streaming    vectorised building blocks of the pass (find_firings, hash_keys)
    firing_log   FiringLog: every firing of the pass, 16 bytes each, read at the end
    examples     top examples and quantile-band samples drawn exactly from the log, with their windows
    ranking      each group's n best entries of flat arrays (segmented selection without a full sort)
    cooccurrence CooccurrenceCounter: co-firing counts from the log (sparse, any d_sae), top partners by Jaccard
    distributed  torchrun: each rank's share of the contexts, its accumulators merged into rank 0 (exactly)
    head_shares  HeadShareAccumulator: each head's share of a hook_z feature's pre-activation over its firings
    pursuit      MPStepAccumulator, MPStatsConfig: at which pursuit step each atom is chosen; pursuit_traces
    codes        code_search, search_tokens: codebook codes that fire where a regular expression matches
    weights      statistics of the weights alone: logit_effects, decoder_neighbors, final_norm_map
    detail       one feature on request: logit_histogram, neuron_alignment, context_activations
    tables       feature_tables: the accumulators' results as the Arrow tables `store.features` writes
    inspector    inspect_prompt, trace_prompt: a prompt read through every dictionary of a site (the UI's inspector)
    search_text  search_workspace, search_text: the features that fire most on a text, in every dictionary of a model
"""

__all__ = ["analyze", "codes", "cooccurrence", "detail", "distributed", "examples", "firing_log", "head_shares",
           "inspector", "pursuit", "ranking", "search_text", "stats", "streaming", "tables", "weights"]
