"""Explanations: every feature of an analysed dictionary described in words and scored on held-out examples.

    result = run_explain(store_path, ExplainRequest("demo-topk", scorers=("detection", "simulation")))
    for scorer, (metric, summary) in result.summaries.items():
        print(scorer, metric, summary.mean, summary.baseline_mean)

Modules:
    registry    Explanation, Score, the Explainer and Scorer protocols, EXPLAINERS and SCORERS (the CLI's names)
    evidence    a feature's windows from the store, split by context into explain / held-out sets, negatives
    patterns    the `patterns` explainer: firing tokens and the tokens before them, with the share they cover
    scorers     `detection` and `simulation`, applying an explanation's rule to held-out windows
    chat        the language model: an OpenAI-compatible endpoint or a local model (the embedded one by default)
    llm         the `llm` explainer: marked examples in, one sentence out
    judges      `detection-llm` and `fuzz`, a language model judging held-out windows from an explanation's text
    run         ExplainRequest, plan, run_explain: batched, resumable, with a shuffled-explanation baseline
Stored in `explanations` / `explanation_scores` (store/explanations.py, which also searches them).
"""
from analysis.explain.chat import ChatOptions, EmbeddedChat, EndpointChat, MalformedReply, Unreachable, open_chat
from analysis.explain.evidence import EvidenceReader, FeatureEvidence, Vocab, Windows
from analysis.explain.judges import DetectionJudge, FuzzJudge
from analysis.explain.llm import LLMExplainer
from analysis.explain.patterns import PatternsExplainer
from analysis.explain.registry import (
    DEFAULT_EXPLAINER,
    DEFAULT_SCORERS,
    EXPLAINERS,
    SCORERS,
    Explainer,
    ExplainFailed,
    Explanation,
    Score,
    Scorer,
    Tools,
)
from analysis.explain.run import ExplainRequest, ExplainResult, Plan, parse_features, plan, run_explain
from analysis.explain.scorers import Detection, Simulation

__all__ = ["DEFAULT_EXPLAINER", "DEFAULT_SCORERS", "EXPLAINERS", "SCORERS", "ChatOptions", "Detection",
           "DetectionJudge", "EmbeddedChat", "EndpointChat", "EvidenceReader", "ExplainFailed", "ExplainRequest",
           "ExplainResult", "Explainer", "Explanation", "FeatureEvidence", "FuzzJudge", "LLMExplainer",
           "MalformedReply", "PatternsExplainer", "Plan", "Score", "Scorer", "Simulation", "Tools", "Unreachable",
           "Vocab", "Windows", "open_chat", "parse_features", "plan", "run_explain"]
