"""Head scores: hand-built heads on tiny-random, the score maths on hand-made patterns, the store round trip."""
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from analysis.heads.run import save_scan, scan_tables
from analysis.heads.scan import HeadScanConfig, kv_group, scan_heads
from analysis.heads.scores import induction_random_sum, match_masks, pattern_counts, pattern_sums
from store.heads import (
    export_head_stats,
    feature_heads,
    get_head_run,
    head_examples,
    head_means,
    head_scores,
    save_feature_heads,
    score_grid,
    top_heads,
)
from tests.factories import seeded_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


FREQS = (1, 2, 4, 8, 16, 32, 48, 64)
"""Frequencies (x 2 pi / 128) of the positional code: sum_f cos(theta_f d) peaks only at d = 0 for |d| < 128."""


def previous_token_model(scale: float = 3.0):
    """tiny-random whose head 0.0 attends to the previous token through real weights.

    W_pos puts a sinusoidal code of the position on dims 0..15 (and its negative on 16..31, so LayerNorm's
    mean is 0 and leaves it alone); tokens live on dims 32..63. W_K reads the code as is, W_Q rotates it back
    by one position, so q_i . k_j = c * sum_f cos(theta_f (i - 1 - j)), largest at j = i - 1.
    """
    model = seeded_tiny()
    n_ctx, d_head = model.cfg.n_ctx, model.cfg.d_head
    theta = torch.tensor(FREQS, dtype=torch.float32) * 2 * math.pi / 128
    angle = torch.arange(n_ctx, dtype=torch.float32)[:, None] * theta  # (pos, freq)
    code = torch.stack([angle.cos(), angle.sin()], dim=-1).reshape(n_ctx, -1)  # (pos, 16) pairs (cos, sin)
    rotate = torch.zeros(16, 16)
    for j, t in enumerate(theta.tolist()):
        rotate[2 * j:2 * j + 2, 2 * j:2 * j + 2] = torch.tensor([[math.cos(t), -math.sin(t)],
                                                                  [math.sin(t), math.cos(t)]])
    with torch.no_grad():
        model.W_pos.zero_()
        model.W_pos[:, :16], model.W_pos[:, 16:32] = code, -code
        model.W_E[:, :32] = 0
        model.W_E[:, 32:] -= model.W_E[:, 32:].mean(1, keepdim=True)
        attn = model.blocks[0].attn
        model.blocks[0].ln1.w.fill_(1.0)
        model.blocks[0].ln1.b.zero_()
        attn.W_Q[0].zero_(), attn.W_K[0].zero_(), attn.b_Q[0].zero_(), attn.b_K[0].zero_()
        attn.W_Q[0, :16, :d_head] = scale * rotate
        attn.W_K[0, :16, :d_head] = scale * torch.eye(16)
    return model


def corpus_tokens(model, n=12, pos=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.cfg.d_vocab, (n, pos), generator=g)
    tokens[:, 0] = model.tokenizer.bos_token_id
    return tokens


@pytest.fixture(scope="module")
def prev_model():
    return previous_token_model()


@pytest.fixture(scope="module")
def scan(prev_model):
    tokens = corpus_tokens(prev_model)
    return scan_heads(prev_model, tokens, list(range(100, 100 + len(tokens))),
                      HeadScanConfig(batch=5, n_examples=3, random_seqs=4, random_half=20), progress=False)


def test_a_hand_built_previous_token_head_scores_above_0_9_and_the_others_lower(scan):
    prev = scan.scores["prev_token"]
    assert prev[0, 0] > 0.9
    others = np.delete(prev.ravel(), 0)
    assert others.max() < 0.5
    assert scan.scores["distance"][0, 0] == pytest.approx(1.0, abs=0.1)
    assert scan.scores["entropy"][0, 0] < 0.5 < scan.scores["entropy"][1].min()


def test_scores_match_transformer_lens_head_detector(prev_model):
    """TransformerLens' 'mul' score is sum(A * detection) / pos; ours is a mean over destinations with a match."""
    from transformer_lens.head_detector import detect_head

    text = "abcabcXYabcabc the cat the cat"
    tokens = prev_model.to_tokens(text)
    pos = tokens.shape[1]
    with torch.inference_mode():
        _, cache = prev_model.run_with_cache(tokens)
    masks = match_masks(tokens)
    counts = pattern_counts(1, pos, masks)
    for ours, theirs in (("prev_token", "previous_token_head"), ("duplicate", "duplicate_token_head"),
                         ("induction", "induction_head")):
        reference = detect_head(prev_model, text, theirs, exclude_bos=False, exclude_current_token=False)
        for layer in range(prev_model.cfg.n_layers):
            sums = pattern_sums(cache["pattern", layer], masks)[ours]
            np.testing.assert_allclose((sums / pos).numpy(), reference[layer].numpy(), atol=1e-5)
        assert counts[ours] > 0


def test_masks_on_hand_made_tokens():
    tokens = torch.tensor([[5, 1, 2, 1, 2, 7]])
    masks = match_masks(tokens)
    # dest 3 (token 1) duplicates src 1; its induction source is src 2 (the token after the earlier 1)
    assert masks.mask("duplicate")[0, 3].nonzero().ravel().tolist() == [1]
    assert masks.mask("induction")[0, 3].nonzero().ravel().tolist() == [2]
    assert masks.mask("induction")[0, 4].nonzero().ravel().tolist() == [3]
    assert masks.n_duplicate == 2 and masks.n_induction == 2


def test_positional_scores_match_a_loop_over_destinations():
    torch.manual_seed(0)
    batch, heads, pos = 2, 3, 7
    pattern = torch.rand(batch, heads, pos, pos).tril()
    pattern /= pattern.sum(-1, keepdim=True)
    sums = pattern_sums(pattern, match_masks(torch.randint(0, 4, (batch, pos))))
    expected = {name: torch.zeros(heads) for name in ("prev_token", "self", "first_token", "distance", "entropy")}
    for d in range(1, pos):
        row = pattern[:, :, d]  # (batch, head, src)
        expected["prev_token"] += row[:, :, d - 1].sum(0)
        expected["self"] += row[:, :, d].sum(0)
        expected["first_token"] += row[:, :, 0].sum(0)
        expected["distance"] += (row * (d - torch.arange(pos)).clamp(min=0)).sum((0, 2))
        expected["entropy"] -= (row * row.clamp(min=1e-30).log()).sum((0, 2))
    for name, value in expected.items():
        torch.testing.assert_close(sums[name], value, atol=1e-5, rtol=1e-5)


def test_induction_random_reads_i_minus_t_plus_1_on_a_hand_made_pattern():
    half, offset = 5, 1  # BOS, then 5 tokens repeated twice
    pos = offset + 2 * half
    perfect = torch.zeros(2, 3, pos, pos)
    prev = torch.zeros(2, 3, pos, pos)
    for d in range(pos):
        src = d - half + 1 if d >= offset + half else 0
        perfect[:, :, d, src] = 1.0
        prev[:, :, d, max(d - 1, 0)] = 1.0
    assert induction_random_sum(perfect, half, offset).tolist() == [2 * half] * 3  # score 1 after / (2 * T)
    assert induction_random_sum(prev, half, offset).sum() == 0


def test_random_induction_pass_counts_and_gqa_groups():
    from analysis.heads.ablation import mean_head_outputs

    model = seeded_tiny(n_key_value_heads=2)
    tokens = corpus_tokens(model, n=5, pos=16)
    result = scan_heads(model, tokens, [0, 1, 2, 3, 4],
                        HeadScanConfig(batch=2, random_seqs=3, random_half=7, mean_contexts=3), progress=False)
    # z is averaged over whole batches starting below mean_contexts: contexts 0..3 here
    np.testing.assert_allclose(result.mean_z, mean_head_outputs(model, tokens[:4]), atol=1e-5)
    assert result.counts["induction_random"] == 3 * 7
    assert result.n_kv_heads == 2 and [kv_group(model, h) for h in range(4)] == [0, 0, 1, 1]
    assert result.mean_z.shape == (2, 4, model.cfg.d_head)
    assert scan_tables(result)["head_stats"].column("kv_group").to_pylist()[:4] == [0, 0, 1, 1]


def test_top_contexts_are_the_most_concentrated(scan):
    assert (scan.top_context[0, 0] >= 100).all()
    assert np.all(np.diff(scan.top_score[0, 0]) <= 0)
    # the previous-token head's peak source is dest - 1 almost everywhere
    src = scan.top_src[0, 0, 0]
    assert (src == np.arange(len(src))).mean() > 0.9


def test_store_round_trip_replaces_on_rerun_and_exports(con, scan, tmp_path):
    save_scan(con, scan, "c")
    save_scan(con, scan, "c")  # a rerun replaces, never duplicates
    run = get_head_run(con, "tiny-random", "c")
    assert (run.n_layers, run.n_heads, run.n_kv_heads, run.n_contexts) == (2, 4, 4, 12)
    assert run.config["n_examples"] == 3
    grid = score_grid(con, "tiny-random", "c", "prev_token")
    assert len(grid) == 8 and grid[0][:2] == (0, 0)
    assert grid[0][2] == pytest.approx(float(scan.scores["prev_token"][0, 0]))
    assert top_heads(con, "tiny-random", "c", "prev_token", 1)[0][:2] == (0, 0)
    assert set(head_scores(con, "tiny-random", "c", 1, 3)) == set(scan.scores)
    examples = head_examples(con, "tiny-random", "c", 0, 0)
    assert [e.rank for e in examples] == [0, 1, 2] and len(examples[0].peak_src) == 63
    assert len(head_means(con, "tiny-random", "c")) == 8
    rows = export_head_stats(con, tmp_path / "heads.parquet")
    table = pq.read_table(tmp_path / "heads.parquet")
    assert rows == table.num_rows == 8 * len(scan.scores)
    assert {"model", "corpus", "layer", "head", "kv_group", "score", "value", "n_tokens"} == set(table.column_names)


def test_feature_heads_round_trip(con):
    import pyarrow as pa

    table = pa.table({"feature": pa.array([0, 0, 1, 1], pa.int32()), "head": pa.array([0, 1, 0, 1], pa.int16()),
                      "weight": pa.array([0.25, 0.75, 1.0, 0.0], pa.float32())})
    save_feature_heads(con, "d", table)
    save_feature_heads(con, "d", table)
    assert feature_heads(con, "d", 0) == [0.25, 0.75]
    assert feature_heads(con, "d", 7) == []


def test_scan_rejects_bad_input(prev_model):
    from store.errors import InputError

    with pytest.raises(InputError, match="at least 2 tokens"):
        scan_heads(prev_model, torch.zeros(1, 1, dtype=torch.long), [0], progress=False)
    with pytest.raises(InputError, match="exceed the model's context"):
        scan_heads(prev_model, torch.zeros(1, 300, dtype=torch.long), [0], progress=False)
    with pytest.raises(ValueError, match="batch must be positive"):
        HeadScanConfig(batch=0)


def test_ensure_head_scan_reuses_a_stored_scan(tmp_path):
    from analysis.corpora import add_corpus
    from analysis.heads.run import ensure_head_scan
    from sae.models import load_model
    from store import session

    text = tmp_path / "t.txt"
    text.write_text("one two three four five six seven. " * 40)
    db = tmp_path / "s.duckdb"
    with session(db) as con:
        add_corpus(con, "t", str(text), "tiny-random", ctx=32)
    model = load_model("tiny-random", device="cpu")
    config = HeadScanConfig(random_seqs=2, random_half=8)
    run, reused = ensure_head_scan(db, model, "t", 128, config, progress=False)
    assert not reused and run.n_tokens == 128 and run.n_contexts == 4
    again, reused = ensure_head_scan(db, model, "t", 96, config, progress=False)
    assert reused and again.n_tokens == 128
    more, reused = ensure_head_scan(db, model, "t", 256, config, progress=False)
    assert not reused and more.n_tokens == 256


def test_a_scan_of_other_text_is_not_reused_and_a_late_one_is_not_stored(tmp_path):
    from analysis.corpora import add_corpus, build_corpus
    from analysis.heads.run import ensure_head_scan, load_scan_input
    from sae.models import load_model
    from store import session
    from store.corpora import corpus_fingerprint
    from store.errors import InputError

    text, other = tmp_path / "t.txt", tmp_path / "o.txt"
    text.write_text("one two three four five six seven. " * 40)
    other.write_text("entirely different words here! " * 40)
    db = tmp_path / "s.duckdb"
    with session(db) as con:
        add_corpus(con, "t", str(text), "tiny-random", ctx=32)
    model = load_model("tiny-random", device="cpu")
    config = HeadScanConfig(random_seqs=2, random_half=8)
    run, _ = ensure_head_scan(db, model, "t", 64, config, progress=False)
    with session(db) as con:
        assert run.corpus_fingerprint == corpus_fingerprint(con, "t") is not None
        con.execute("UPDATE head_runs SET corpus_fingerprint = NULL")  # as scanned before fingerprints
    assert not ensure_head_scan(db, model, "t", 64, config, progress=False)[1]
    with session(db) as con:
        data = load_scan_input(con, model, "t", 64)
    scan = scan_heads(model, data.tokens, data.context_ids, config, progress=False)
    with session(db) as con:  # the corpus is replaced while the scan runs
        build_corpus(con, "t", str(other), "tiny-random", ctx=32, replace=True, force=True)
        with pytest.raises(InputError, match="was replaced while this ran"):
            save_scan(con, scan, "t", data.fingerprint)
        assert con.execute("SELECT count(*) FROM head_runs").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM head_stats").fetchone()[0] == 0


def test_mean_ablation_reads_means_only_from_a_scan_of_the_current_text(tmp_path, monkeypatch):
    import analysis.heads.ablation
    from analysis.corpora import add_corpus
    from analysis.heads.run import ensure_head_scan, load_head_means
    from sae.models import load_model
    from store import session

    text = tmp_path / "t.txt"
    text.write_text("one two three four five six seven. " * 40)
    db = tmp_path / "s.duckdb"
    with session(db) as con:
        add_corpus(con, "t", str(text), "tiny-random", ctx=32)
    model = load_model("tiny-random", device="cpu")
    ensure_head_scan(db, model, "t", 64, HeadScanConfig(random_seqs=2, random_half=8), progress=False)
    computed = []
    monkeypatch.setattr(analysis.heads.ablation, "mean_head_outputs",
                        lambda model, tokens: computed.append(len(tokens)) or np.zeros((2, 4, 16)))
    with session(db) as con:
        stored = load_head_means(con, model, "t")
        assert computed == [] and stored.shape == (2, 4, 16) and np.abs(stored).sum() > 0
        con.execute("UPDATE head_runs SET corpus_fingerprint = ?", ["0" * 64])  # a scan of other text
        assert np.abs(load_head_means(con, model, "t")).sum() == 0 and len(computed) == 1
