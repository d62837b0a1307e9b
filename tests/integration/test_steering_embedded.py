"""Steering the embedded SmolLM2-135M-Instruct with a dictionary feature whose top logit tokens are known.

No trained dictionary is needed: a randomly initialised TopK dictionary at layer 18 gets one feature whose
decoder row is the unembedding direction of " ocean", so its top logit tokens (computed the way the feature
analysis does, analysis.features.weights.logit_effects) are known. The dictionary is registered in a workspace
with an analysed max activation, so the run goes through the store like a user's would.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

HOOK = "blocks.18.hook_resid_post"
FEATURE = 11
MAX_ACT = 50.0
"""Stored max activation of the feature; the residual norm at layer 18 is ~200, so strength 8 adds ~2x it."""
STRENGTH = 8.0
MARGIN = 0.3
"""Required rise of the probability mass on the feature's top-5 logit tokens (mean over generated tokens)."""
PROMPT = "Tell me about your weekend plans."


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Decoding one token at a time is latency-bound; on a shared 2-core machine a second OpenMP thread
    mostly waits for the first (measured: 12.6 min with two threads, 5 min with one, under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    from sae.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="module")
def workspace_with_feature(model, tmp_path_factory):
    """(workspace, top-5 token ids) with dictionary `ocean` whose feature FEATURE writes " ocean"."""
    from sae.dictionaries import DictSpec, build_training_sae, save_dictionary
    from store import Workspace, session
    from store.dictionaries import DictionaryRow, add_dictionary

    ws = Workspace.resolve(tmp_path_factory.mktemp("steer_ws"))
    torch.manual_seed(0)
    d_in = model.cfg.d_model
    sae = build_training_sae(DictSpec("topk", d_in, 2 * d_in, k=16, hook_name=HOOK, model_name=model.cfg.model_name))
    token = model.tokenizer.encode(" ocean")[0]
    with torch.no_grad():
        sae.W_dec[FEATURE] = torch.nn.functional.normalize(model.W_U[:, token], dim=0)
    folder = ws.dictionaries_dir / "ocean"
    save_dictionary(sae, folder)
    with session(ws.db_path) as con:
        add_dictionary(con, DictionaryRow("ocean", model.cfg.model_name, HOOK, "topk", d_in, 2 * d_in, 16, str(folder)))
        con.execute("INSERT INTO features (dictionary, feature, count, density, mean_act, max_act) "
                    "VALUES ('ocean', ?, 100, 0.01, 5.0, ?)", [FEATURE, MAX_ACT])
    return ws, _top_tokens(model, sae.W_dec[FEATURE].detach())


def _top_tokens(model, row: torch.Tensor) -> list[int]:
    from analysis.features.weights import final_norm_map, logit_effects

    top_ids, _, _, _ = logit_effects(row[None], model.W_U, final_norm_map(model), top=5)
    return top_ids[0].tolist()


def _mass_on(model, run, ids: list[list[int]], tokens: list[int], steered: bool) -> float:
    """Mean next-token probability mass on `tokens` over the generated positions, teacher-forced, with the
    run's intervention on (steered) or off."""
    prompt = run.prompt.tolist()
    masses = []
    for row in ids:
        seq = torch.tensor([prompt + row])
        run.state.offset, run.state.active = 0, steered
        with torch.no_grad(), model.hooks(fwd_hooks=run.hooks):
            probs = model(seq)[0, len(prompt) - 1:-1].softmax(dim=-1)
        run.state.active = False
        masses.append(float(probs[:, tokens].sum(dim=-1).mean()))
    return sum(masses) / len(masses)


def test_feature_raises_its_top_tokens_and_the_run_reproduces(model, workspace_with_feature):
    from analysis.steering.lab import Intervention, SteerConfig, SteerRun
    from analysis.steering.runs import load_dictionaries, load_run, record_run
    from store import session

    ws, top = workspace_with_feature
    assert model.tokenizer.encode(" ocean")[0] in top
    config = SteerConfig(PROMPT, (Intervention("add", dictionary="ocean", feature=FEATURE, strength=STRENGTH),),
                         max_new_tokens=16, samples=2, seed=0)
    with session(ws.db_path) as con:
        dictionaries = load_dictionaries(con, config, ws, device="cpu")
    run = SteerRun(model, config, dictionaries)
    result = run.run()
    assert "(store)" in result.notes[0]
    default_mass = _mass_on(model, run, result.default_ids, top, steered=False)
    steered_mass = _mass_on(model, run, result.steered_ids, top, steered=True)
    print(f"\nmass on top-5 logit tokens of the feature: default {default_mass:.4f} -> steered {steered_mass:.4f} "
          f"(margin {steered_mass - default_mass:.4f}); steered text: {result.steered_texts[0]!r}")
    assert steered_mass - default_mass > MARGIN
    assert result.measures["kl_mean"] > 0
    with session(ws.db_path) as con:
        run_id = record_run(con, result)
        config_again, numbers = load_run(con, run_id)
    again = SteerRun(model, config_again, dictionaries, numbers, measured=False).run()
    assert again.steered_texts == result.steered_texts and again.default_texts == result.default_texts
