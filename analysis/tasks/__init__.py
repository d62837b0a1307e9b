"""Supervised-dictionary evaluations on a task whose attributes are known per prompt ("Towards Principled
Evaluations of Sparse Autoencoders for Interpretability and Control", Makelov, Lange, Nanda).

    result, path = run_task_eval(ws, TaskEvalRequest("ioi", dictionary="demo-topk"))
    result["dictionaries"]["supervised"]["sufficiency"], result["dictionaries"]["demo-topk"]["edit_accuracy"]

    result = evaluate_site(model, "blocks.24.hook_resid_post", sae, "name")   # without a workspace

Modules, top to bottom:
    ioi.py         the IOI task: names, templates, prompts with their attributes and counterfactuals, tokens
    site.py        the last-token activation at a hook: read it, patch it (TransformerLens hooks)
    supervised.py  the supervised dictionary: mean codes u_bias + u_io[IO] + u_s[S] + u_order[order]
    codes.py       a learned dictionary's codes and the part a set of features adds (its own encode/decode)
    metrics.py     the arithmetic: logit difference, sufficiency, necessity, F1, edit agreement and weight
    evaluate.py    one evaluation of a site: approximation, control and interpretability, as a dict
    run.py         the command's entry: site from a dictionary or --layer/--hook, the result saved as JSON
"""
from analysis.tasks.evaluate import evaluate_site
from analysis.tasks.ioi import ATTRIBUTES, IOITask, build_ioi
from analysis.tasks.run import TASKS, TaskEvalRequest, check_task, resolve_site, run_task_eval, save_result
from analysis.tasks.supervised import SupervisedDictionary

__all__ = ["ATTRIBUTES", "IOITask", "SupervisedDictionary", "TASKS", "TaskEvalRequest", "build_ioi",
           "check_task", "evaluate_site", "resolve_site", "run_task_eval", "save_result"]
