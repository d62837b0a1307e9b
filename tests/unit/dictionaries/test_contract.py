"""The contract every registered architecture keeps, and a toy architecture that joins with one `register` call.

Each architecture is trained on the tiny model's activations through the workspace (analysis.training), or created
by its command where it is not trained (neurons: analysis.features.neurons.add_neurons), then:
encode / decode / forward shapes, at most k active features per row where k bounds rows, a save -> SAELens
`load_from_disk` round trip with the same outputs, a steering hook on one of its features, and an analysis pass
that stores its features. The toy architecture (a ReLU SAE with a fixed threshold, defined below) goes through
the same checks using only public workspace functions: adding an architecture needs no other module.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig

from analysis.activations import build_cache
from analysis.corpora import add_corpus
from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
from analysis.features.neurons import NeuronsRequest, add_neurons
from analysis.steering.lab import Intervention, SteerConfig, SteerDictionary, steer
from analysis.training import TrainRequest, train_dictionary
from sae.activation_reader import ActivationReader
from sae.dictionaries import (
    ARCHITECTURES,
    Architecture,
    DictSpec,
    arch_of,
    build_training_sae,
    init_from_sample,
    register,
    save_dictionary,
    train_step,
    trainable,
    unregister,
)
from store import session
from store.queries import count_features, feature_card

HOOK = "blocks.0.hook_resid_post"
N_CTX, CTX, D_SAE, K = 24, 16, 96, 4
PROMPT = "The cat sat on"


# ---------------------------------------------------------------------------------------------- a toy architecture

class _FixedThreshold:
    """Keeps a pre-activation only above cfg.threshold (a JumpReLU whose threshold is not learned)."""

    def get_activation_fn(self):
        return lambda pre: torch.nn.functional.threshold(pre, self.cfg.threshold, 0.0)


@dataclass
class ThresholdSAEConfig(StandardSAEConfig):
    threshold: float = 0.05
    """Pre-activations at or below it are zeroed."""

    @classmethod
    def architecture(cls) -> str:
        return "test_threshold_relu"


@dataclass
class ThresholdTrainingSAEConfig(StandardTrainingSAEConfig):
    threshold: float = 0.05
    """Pre-activations at or below it are zeroed."""

    @classmethod
    def architecture(cls) -> str:
        return "test_threshold_relu"


class ThresholdSAE(_FixedThreshold, StandardSAE):
    pass


class ThresholdTrainingSAE(_FixedThreshold, StandardTrainingSAE):
    pass


TOY = Architecture("toy", ThresholdTrainingSAE, ThresholdTrainingSAEConfig, ThresholdSAE, ThresholdSAEConfig,
                   saelens_names=("test_threshold_relu",), default_sparsity=0.5, sparsity_meaning="L1 penalty",
                   sparsity_field="l1_coefficient")


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister(TOY.name)
    assert TOY.name not in ARCHITECTURES and "test_threshold_relu" not in SAE_CLASS_REGISTRY
    assert "test_threshold_relu" not in SAE_TRAINING_CLASS_REGISTRY


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model's matmuls are too small to share between threads (a second one only adds sync).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_model):
    """A workspace with a corpus and an activation cache over it; dictionaries are trained on first use."""
    from store import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("contract") / "ws")
    src = tmp_path_factory.mktemp("src") / "t.txt"
    src.write_text("".join(f"Line {i} of the contract corpus, with a number: {i * 7 % 13}.\n\n" for i in range(150)))
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=CTX)
        cache = build_cache(ws, con, tiny_model, HOOK, "t", tokens=N_CTX * CTX, progress=False)
    acts = torch.cat([a for _, a in ActivationReader(cache.path).contexts(N_CTX)])
    return {"ws": ws, "cache": cache.path.name, "rows": acts.reshape(-1, acts.shape[-1]).float(), "trained": {}}


def _rows(space, tiny_model, hook: str) -> torch.Tensor:
    """[n, d] activations at `hook`: the cache's rows at HOOK, else the model's on a few corpus-like lines."""
    if hook == HOOK:
        return space["rows"]
    text = " ".join(f"Line {i} of the contract corpus, with a number: {i * 7 % 13}." for i in range(8))
    _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(text), names_filter=hook)
    return cache[hook][0]


def _trained(space, tiny_model, arch: str):
    """The workspace's dictionary of `arch` (its store row), trained (or created) once per module."""
    if arch not in space["trained"] and not ARCHITECTURES[arch].trainable:  # neurons: from the model's weights
        space["trained"][arch] = add_neurons(space["ws"], NeuronsRequest(layer=0, model="tiny-random", name=arch),
                                             lm=tiny_model)
    if arch not in space["trained"]:
        torch.manual_seed(0)
        k = K if ARCHITECTURES[arch].default_k is not None else None
        with session(space["ws"].db_path) as con:
            row, _ = train_dictionary(space["ws"], con, TrainRequest(
                arch=arch, activations=space["cache"], name=arch, d_sae=D_SAE, k=k, tokens=512, batch=128, lr=1e-2),
                lm=tiny_model, progress=False)
        space["trained"][arch] = row
    return space["trained"][arch]


def _training_dictionary(arch: str, rows: torch.Tensor, steps: int = 3):
    """A training dictionary of `arch` after a few steps on rows (default k and sparsity)."""
    torch.manual_seed(0)
    sae = build_training_sae(DictSpec(arch, rows.shape[1], D_SAE, hook_name=HOOK, model_name="tiny-random"))
    init_from_sample(sae, rows)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(steps):
        train_step(sae, rows[step * 64:(step + 1) * 64], optimizer, step, steps)
    return sae


# ---------------------------------------------------------------------------------------------- the checks

def check_record(arch: Architecture) -> None:
    assert ARCHITECTURES[arch.name] is arch
    # SAELens maps the record's architecture names back to its classes, so it loads and trains them.
    saved_name = arch.inference_config.architecture()
    assert SAE_CLASS_REGISTRY[saved_name] == (arch.inference_class, arch.inference_config)
    assert arch.trainable != bool(arch.created_by)  # a dictionary is trained, or a command creates it
    if arch.trainable:
        training_name = arch.training_config.architecture()
        assert training_name in arch.saelens_names
        assert SAE_TRAINING_CLASS_REGISTRY[training_name] == (arch.training_class, arch.training_config)
    else:
        assert saved_name in arch.saelens_names
    assert (arch.default_k is None) == (not arch.k_meaning)
    assert (arch.default_sparsity is None) == (not arch.sparsity_meaning) == (not arch.sparsity_field)


def check_shapes_and_sparsity(arch: Architecture, sae, x: torch.Tensor, k: int | None) -> None:
    n = x.shape[0]
    with torch.no_grad():
        acts = sae.encode(x)
        assert acts.shape == (n, sae.cfg.d_sae)
        assert sae.decode(acts).shape == x.shape and sae(x).shape == x.shape
        assert torch.isfinite(sae(x)).all()
    active = (acts != 0).sum(dim=-1)
    if k is not None and not arch.k_per_batch:
        assert 0 < int(active.max()) <= k
    elif k is not None:  # k on average over the batch
        assert int(active.sum()) <= k * n
    if arch.tied:
        assert "W_enc" not in dict(sae.named_parameters())


def check_round_trip(arch: Architecture, sae, x: torch.Tensor, folder) -> None:
    if arch.trainable:
        save_dictionary(sae, folder / "first")
    else:  # created as the inference dictionary itself
        sae.save_model(folder / "first")
    loaded = SAE.load_from_disk(folder / "first")
    assert type(loaded) is arch.inference_class and arch_of(loaded) is arch and arch_of(sae) is arch
    with torch.no_grad():
        if not arch.k_per_batch:  # BatchTopK's saved encoder is its learned threshold, not the batch top k
            torch.testing.assert_close(loaded(x), sae(x), rtol=1e-4, atol=1e-4)
            assert torch.equal(loaded.encode(x) != 0, sae.encode(x) != 0)
        loaded.save_model(folder / "again")
        again = SAE.load_from_disk(folder / "again")
        assert torch.equal(again.encode(x), loaded.encode(x)) and torch.equal(again(x), loaded(x))


def check_steering(name: str, sae, tiny_model) -> None:
    dictionary = SteerDictionary(name, sae, model="tiny-random")
    hook = dictionary.hook
    _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(PROMPT), names_filter=hook)
    x = cache[hook][0]
    peak = dictionary.encode(x).amax(dim=0)
    on, off = int(peak.argmax()), int(peak.argmin())
    assert peak[on] > 0
    target = dictionary.target(on)  # at its own value, the feature's splice changes nothing

    def own_value(act, hook):
        rows = act.reshape(-1, act.shape[-1])
        return target.clamp(rows, target.read(rows)).reshape(act.shape)

    tokens = tiny_model.to_tokens(PROMPT)
    assert torch.equal(tiny_model.run_with_hooks(tokens, fwd_hooks=[(hook, own_value)]), tiny_model(tokens))
    config = SteerConfig(prompt=PROMPT, chat=False, model="tiny-random", max_new_tokens=3,
                         interventions=(Intervention("clamp", dictionary=name, feature=off, value=10.0),))
    result = steer(tiny_model, config, {name: dictionary})
    assert result.measures["kl_mean"] > 0


def check_analysis(arch: Architecture, ws, name: str, tiny_model) -> None:
    out = analyze_dictionary(ws, AnalyzeRequest(name, corpus="t", tokens=N_CTX * CTX, examples=3, quantiles=2),
                             lm=tiny_model, progress=False)
    with session(ws.db_path, read_only=True) as con:
        d_sae = con.execute("SELECT d_sae FROM dictionaries WHERE name = ?", [name]).fetchone()[0]
        assert out.d_sae == d_sae and out.alive > 0
        assert count_features(con, name) == d_sae
        alive = con.execute("SELECT feature FROM features WHERE dictionary = ? AND count > 0 ORDER BY count DESC "
                            "LIMIT 1", [name]).fetchone()[0]
        card = feature_card(con, name, alive)
    assert card.count > 0 and card.top_examples
    assert bool(card.mp_steps) == arch.has_pursuit_steps


# ---------------------------------------------------------------------------------------------- every architecture

@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_record_matches_what_saelens_registered(name):
    check_record(ARCHITECTURES[name])


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_shapes_and_at_most_k_active(space, tiny_model, name):
    arch = ARCHITECTURES[name]
    if arch.trainable:
        training = _training_dictionary(name, space["rows"])
        check_shapes_and_sparsity(arch, training, space["rows"][:64], arch.default_k)
    row = _trained(space, tiny_model, name)
    assert row.arch == name and row.k == (K if arch.default_k is not None else None)
    # A saved BatchTopK dictionary encodes by its learned threshold: k bounds no batch there.
    x = _rows(space, tiny_model, row.hook)[:64]
    check_shapes_and_sparsity(arch, SAE.load_from_disk(row.path), x, None if arch.k_per_batch else row.k)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_save_load_round_trip_through_saelens(space, tiny_model, tmp_path, name):
    arch = ARCHITECTURES[name]
    if arch.trainable:
        check_round_trip(arch, _training_dictionary(name, space["rows"]), space["rows"][:64], tmp_path)
    else:
        row = _trained(space, tiny_model, name)
        check_round_trip(arch, SAE.load_from_disk(row.path), _rows(space, tiny_model, row.hook)[:64], tmp_path)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_steering_hook_runs_with_one_of_its_features(space, tiny_model, name):
    row = _trained(space, tiny_model, name)
    check_steering(name, SAE.load_from_disk(row.path), tiny_model)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_analysis_stores_its_features(space, tiny_model, name):
    _trained(space, tiny_model, name)
    check_analysis(ARCHITECTURES[name], space["ws"], name, tiny_model)


# ---------------------------------------------------------------------------------------------- a new one

def test_a_toy_architecture_joins_with_one_register_call(toy, space, tiny_model, tmp_path):
    check_record(toy)
    x = space["rows"][:64]
    check_shapes_and_sparsity(toy, _training_dictionary(toy.name, space["rows"]), x, None)
    check_round_trip(toy, _training_dictionary(toy.name, space["rows"]), x, tmp_path)
    with session(space["ws"].db_path) as con:  # train -> save -> record through the workspace, as the CLI does
        row, metrics = train_dictionary(space["ws"], con, TrainRequest(
            arch=toy.name, activations=space["cache"], name="toy-dict", d_sae=D_SAE, tokens=512, batch=128, lr=1e-2),
            lm=tiny_model, progress=False)
    assert (row.arch, row.k) == (toy.name, None) and 0 < metrics["fvu"]
    loaded = SAE.load_from_disk(row.path)
    assert isinstance(loaded, ThresholdSAE) and loaded.cfg.threshold == 0.05
    acts = loaded.encode(x)
    assert ((acts == 0) | (acts > 0.05)).all()
    check_steering("toy-dict", loaded, tiny_model)
    check_analysis(toy, space["ws"], "toy-dict", tiny_model)


def test_the_train_help_lists_every_architecture(toy, monkeypatch, capsys):
    from app.commands.dicts import registry_help
    from tests.helpers import run_cli

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "relu, topk, batchtopk, jumprelu, mp, codebook, gba or toy." in out  # not neurons: not trained
    helps = registry_help()  # what the help shows for --k and --l1 (wrapped there)
    for arch in trainable():
        if arch.default_k is not None:
            assert f"{arch.name}: {arch.k_meaning} (default {arch.default_k})" in helps["k"]
    assert "relu: L1 penalty (default 5)" in helps["l1"] and "toy: L1 penalty (default 0.5)" in helps["l1"]
