import json

import pytest

from analysis.corpora import add_corpus, ensure_corpus
from sae.corpus import builtin_documents, chunk, tokenize_source
from sae.models import tiny_tokenizer
from store.corpora import context_text, context_tokens, get_corpus
from store.errors import InputError


def test_chunk_with_bos_prefixes_every_context_and_drops_short_tail():
    docs = [[1, 2, 3], [4, 5, 6, 7], [8]]
    out = chunk(docs, ctx=4, bos_id=0, sep_id=9)
    # stream: 1 2 3 9 4 5 6 7 9 8 9  -> bodies of 3 tokens, tail "9" (shorter than 3) dropped
    assert out == [[0, 1, 2, 3], [0, 9, 4, 5], [0, 6, 7, 9]]
    assert all(len(c) == 4 for c in out)


def test_chunk_without_bos_uses_full_windows():
    out = chunk([[1, 2, 3, 4, 5]], ctx=2, bos_id=None, sep_id=None)
    assert out == [[1, 2], [3, 4]]  # the lone 5 is a short tail


def test_chunk_respects_max_tokens_rounded_up_to_contexts():
    out = chunk([list(range(100))], ctx=10, bos_id=None, sep_id=None, max_tokens=25)
    assert len(out) == 3


def test_chunk_too_short_ctx():
    with pytest.raises(InputError):
        chunk([[1]], ctx=1, bos_id=0, sep_id=None)


def test_builtin_corpus_is_large_enough_offline():
    tokenizer = tiny_tokenizer()  # bytes: ~1 token per character, so 200k tokens is an easy floor
    contexts = tokenize_source(tokenizer, "builtin", ctx=128, bos=True, max_tokens=400_000)
    assert contexts.n_tokens >= 400_000
    first = next(iter(builtin_documents()))
    assert len(first) > 40


def test_text_files_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tokenizer = tiny_tokenizer()
    (tmp_path / "a.txt").write_text("hello world, " * 30)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "jsonl text " * 30}) + "\n")
    pq.write_table(pa.table({"text": ["parquet text " * 30]}), tmp_path / "c.parquet")
    contexts = tokenize_source(tokenizer, str(tmp_path), ctx=32, bos=True, max_tokens=None)
    joined = "".join(contexts.texts)
    assert "hello world" in joined and "jsonl text" in joined and "parquet text" in joined


@pytest.mark.parametrize("content, message", [
    (b"", "fewer tokens"),
    (b"\xff\xfe bad bytes", "not UTF-8"),
])
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        tokenize_source(tiny_tokenizer(), str(path), ctx=16, bos=True, max_tokens=None)


def test_jsonl_without_text_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"body": "no text"}\n')
    with pytest.raises(InputError, match="line 1"):
        tokenize_source(tiny_tokenizer(), str(path), ctx=16, bos=True, max_tokens=None)


def test_add_corpus_stores_contexts_and_text(con, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    corpus = add_corpus(con, "fox", str(src), "tiny-random", ctx=32)
    assert get_corpus(con, "fox") == corpus
    tokens = context_tokens(con, "fox", 0, corpus.n_contexts)
    assert len(tokens) == corpus.n_contexts and all(len(t) == 32 and t[0] == 0 for t in tokens)
    assert "quick brown fox" in context_text(con, "fox", 0)


def test_add_corpus_bad_input_writes_nothing(con, tmp_path):
    # engine and store each have an InputError; both are ValueErrors the CLI reports as bad input
    with pytest.raises(ValueError, match="existing path"):
        add_corpus(con, "x", str(tmp_path / "missing.txt"), "tiny-random")
    with pytest.raises(ValueError, match="positive"):
        add_corpus(con, "x", "builtin", "tiny-random", tokens=0)
    with pytest.raises(ValueError, match="letters"):
        add_corpus(con, "bad name!", "builtin", "tiny-random")
    assert con.execute("SELECT count(*) FROM corpora").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM contexts").fetchone()[0] == 0


def test_duplicate_corpus_needs_replace(con, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abc " * 100)
    add_corpus(con, "c", str(src), "tiny-random", ctx=16)
    with pytest.raises(ValueError, match="already exists"):
        add_corpus(con, "c", str(src), "tiny-random", ctx=16)
    again = add_corpus(con, "c", str(src), "tiny-random", ctx=8, replace=True)
    assert again.ctx == 8
    assert con.execute("SELECT count(*) FROM contexts").fetchone()[0] == again.n_contexts


def test_ensure_corpus_rejects_other_models_corpus(con, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abc " * 100)
    add_corpus(con, "c", str(src), "tiny-random", ctx=16)
    with pytest.raises(ValueError, match="tokenised for"):
        ensure_corpus(con, "c", "smollm2-135m-instruct", None)


def test_a_file_that_is_not_parquet_is_an_input_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        tokenize_source(tiny_tokenizer(), str(path), ctx=16, bos=True, max_tokens=None)


def test_blank_and_null_jsonl_texts_are_skipped(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [{"text": None}, {"text": "   \n"}, {"text": "real words " * 20}, {"text": ""}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    contexts = tokenize_source(tiny_tokenizer(), str(path), ctx=16, bos=True, max_tokens=None)
    assert "real words" in contexts.texts[0] and not any(t.strip() == "" for t in contexts.texts)


def test_an_empty_hf_name_is_an_input_error():
    with pytest.raises(InputError, match=r"expected hf:NAME\[:CONFIG\]\[:SPLIT\]"):
        tokenize_source(tiny_tokenizer(), "hf: ", ctx=16, bos=True, max_tokens=None)


def test_add_corpus_refuses_more_tokens_than_a_corpus_holds(con):
    from analysis.corpora import MAX_TOKENS

    with pytest.raises(InputError, match=f"at most {MAX_TOKENS:,} tokens"):
        add_corpus(con, "big", "builtin", "tiny-random", tokens=MAX_TOKENS + 1)
    assert con.execute("SELECT count(*) FROM corpora").fetchone()[0] == 0
