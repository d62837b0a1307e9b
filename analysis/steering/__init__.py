"""Steering: edit a model's activations with dictionary features, codes or raw directions while it generates.

    from analysis.steering.lab import Intervention, SteerConfig, SteerRun
    run = SteerRun(model, SteerConfig(prompt="I think", interventions=(Intervention(dictionary="d", feature=3),)),
                   dictionaries)
    result = run.generate()

Modules (public entry points):
    lab        SteerRun, steer, sweep and the config types re-exported for callers (SteerConfig, Intervention, ...)
    config     what a run asks for: SteerConfig, Intervention, Trigger, MODES, POSITIONS
    targets    what an intervention acts on: a feature, a codebook code, a raw direction
    directions raw directions from text: a combination of decoder directions, a vector file in the workspace
    hooks      a SteerConfig bound to TransformerLens forward hooks
    generate   the generation loop over TransformerLens' KV cache (batched samples, streaming)
    measures   what every run measures, teacher-forced on the generated text
    runs       steering in a workspace: load_dictionaries, record_run, load_run, parse_stored
"""

__all__ = ["config", "directions", "generate", "hooks", "lab", "measures", "runs", "targets"]
