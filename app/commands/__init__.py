"""The `sparsescope` commands, one module per group; importing a module registers its commands on `common.app`.

    common     the Typer app, the --workspace option, output helpers shared by every command
    data       models, corpora and activation caches          dicts    train, dicts, import
    analyze    analyze, codes                                 heads    heads, head-pattern, head-ablate, head-rank, ...
    steer      steer                                          report   report, import-report, export-*, import-db
    search     search-text
    demo       the main job end to end                        ui       serve the web UI
A module imports torch, models and analysis code inside its command functions only, so `--help` stays fast.
"""
