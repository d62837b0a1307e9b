"""Text sources and tokenisation into fixed-length contexts.

Sources: `builtin` (English shipped with Python itself: the `pydoc_data` topics and the standard library's
docstrings, read with `ast` so nothing is imported), a local .txt / .jsonl (field `text`) / .parquet (column
`text`) file or a folder of them, or `hf:NAME[:CONFIG][:SPLIT]`, a Hugging Face dataset read with `datasets`
(column `text`, split `train` unless given): streamed from the Hub when online, from the local datasets cache
when `HF_HUB_OFFLINE=1` (nothing is downloaded then; a dataset missing from the cache is one error line).
"""
from __future__ import annotations

import ast
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from store.errors import InputError

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
_SKIP_DIRS = {"test", "tests", "site-packages", "idle_test", "__pycache__", "lib2to3"}


@dataclass(frozen=True)
class Contexts:
    """Fixed-length token windows cut from a stream of documents."""
    token_ids: list[list[int]]
    texts: list[str]
    n_tokens: int


def builtin_documents() -> Iterator[str]:
    """pydoc topics first, then every docstring of the standard library, in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(stdlib).parts):
            continue
        yield from _docstrings(path)


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                yield doc


def file_documents(path: Path) -> Iterator[str]:
    """Documents from one file or a folder of .txt/.jsonl/.parquet files (sorted, recursive)."""
    if not path.exists():
        raise InputError(f"corpus source {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise InputError(f"no .txt, .jsonl or .parquet files in {path}")
    for file in files:
        if file.suffix not in TEXT_SUFFIXES:
            raise InputError(f"corpus file {file} must end in .txt, .jsonl or .parquet")
        if not file.is_file():  # e.g. a folder named notes.txt: refused rather than read as text or skipped
            raise InputError(f"corpus source {file} is not a file; rename it or remove it from {path}")
    for file in files:
        yield from _read_file(file)


def _read_file(file: Path) -> Iterator[str]:
    if file.suffix == ".parquet":
        yield from _parquet_texts(file)
        return
    try:
        raw = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{file} is not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    if file.suffix == ".txt":
        yield from (part for part in raw.split("\n\n") if part.strip())
        return
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{file} line {number}: expected a JSON object with a 'text' field") from None
        if text is not None and not isinstance(text, str):
            raise InputError(f"{file} line {number}: 'text' must be a string (got {type(text).__name__})")
        if text and text.strip():
            yield text


def _parquet_texts(file: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{file} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if "text" not in schema.names:
        raise InputError(f"{file} has no column named 'text' (columns: {', '.join(schema.names)})")
    kind = schema.field("text").type
    value = kind.value_type if pa.types.is_dictionary(kind) else kind  # a categorical column from pandas
    if not (pa.types.is_string(value) or pa.types.is_large_string(value)):
        raise InputError(f"{file}: column 'text' holds {kind}, not text")
    try:
        column = pq.read_table(file, columns=["text"]).column("text")
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{file} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    yield from (t for t in column.to_pylist() if t and t.strip())


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset source, `hf:NAME[:CONFIG][:SPLIT]` (e.g. hf:wikitext:wikitext-2-raw-v1:validation)."""

    name: str
    config: str | None = None
    split: str = "train"


def parse_hf(source: str) -> HFSource:
    """The parts of `hf:NAME[:CONFIG][:SPLIT]` (an empty CONFIG, `hf:NAME::SPLIT`, means the default config)."""
    parts = [part.strip() for part in source[len("hf:"):].split(":")]
    if not parts[0] or len(parts) > 3:
        raise InputError(f"corpus source {source!r}: expected hf:NAME[:CONFIG][:SPLIT], e.g. "
                         "hf:wikitext:wikitext-2-raw-v1:train")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return HFSource(parts[0], config, split)


def _load_hf(label: str, src: HFSource, offline: bool):
    """datasets.load_dataset, its failures as one InputError line. Offline, the datasets cache is read (no
    download is attempted, so a missing name fails at once); online, the split is streamed."""
    import datasets

    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # its "using the cached version" notes would bury our one error line
    try:
        return datasets.load_dataset(src.name, src.config, split=src.split, streaming=not offline)
    except ConnectionError:
        where = "the Hub is offline (HF_HUB_OFFLINE) and it is not in the local datasets cache" if offline \
            else "the Hugging Face Hub cannot be reached and it is not in the local datasets cache"
        raise InputError(f"corpus source {label}: {where}") from None
    except Exception as exc:  # noqa: BLE001 - datasets reports unknown names, configs and splits in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"corpus source {label}: {first}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def hf_documents(source: str) -> Iterator[str]:
    """The `text` column of a Hugging Face dataset split (see HFSource)."""
    src = parse_hf(source)
    try:
        import datasets
    except ImportError:
        raise InputError("hf: corpus sources need the `datasets` package (pip install datasets)") from None
    rows = _load_hf(source, src, offline=bool(datasets.config.HF_HUB_OFFLINE))
    columns = getattr(rows, "column_names", None)
    if columns is not None and "text" not in columns:
        raise InputError(f"corpus source {source}: no column named 'text' (columns: {', '.join(columns)})")
    for row in rows:
        text = row.get("text")
        if isinstance(text, str) and text.strip():  # an empty or whitespace-only row is no document
            yield text


def documents(source: str) -> Iterator[str]:
    if source == "builtin":
        return builtin_documents()
    if source.startswith("hf:"):
        parse_hf(source)  # a malformed name fails here, before anything is read
        return hf_documents(source)
    return file_documents(Path(source).expanduser())


def chunk(token_stream: Iterable[list[int]], ctx: int, bos_id: int | None, sep_id: int | None,
          max_tokens: int | None = None) -> list[list[int]]:
    """Cut documents' tokens into contexts of exactly `ctx` tokens.

    Documents are joined with `sep_id` (the end-of-text token) between them; each context starts with
    `bos_id` when the model expects one. A tail shorter than a full context is dropped, as in SAELens.
    """
    body = ctx - (1 if bos_id is not None else 0)
    if body < 1:
        raise InputError(f"--ctx {ctx} is too short")
    contexts: list[list[int]] = []
    buffer: list[int] = []
    limit = None if max_tokens is None else -(-max_tokens // ctx)
    for doc in token_stream:
        buffer.extend(doc)
        if sep_id is not None:
            buffer.append(sep_id)
        while len(buffer) >= body and (limit is None or len(contexts) < limit):
            head, buffer = buffer[:body], buffer[body:]
            contexts.append(([bos_id] if bos_id is not None else []) + head)
        if limit is not None and len(contexts) >= limit:
            break
    return contexts


def tokenize_source(tokenizer, source: str, ctx: int, bos: bool, max_tokens: int | None,
                    batch_docs: int = 256) -> Contexts:
    """Tokenise `source` into contexts of `ctx` tokens (at most `max_tokens` tokens, rounded up to contexts)."""
    if max_tokens is not None and max_tokens <= 0:
        raise InputError(f"--tokens must be positive (got {max_tokens})")
    bos_id = tokenizer.bos_token_id if bos else None
    sep_id = tokenizer.eos_token_id

    n_docs = 0

    def token_stream() -> Iterator[list[int]]:
        nonlocal n_docs
        batch: list[str] = []
        for doc in documents(source):
            n_docs += 1
            batch.append(doc)
            if len(batch) == batch_docs:
                yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
                batch = []
        if batch:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]

    contexts = chunk(token_stream(), ctx, bos_id, sep_id, max_tokens)
    if not contexts:
        empty = " (it holds no text: empty or whitespace only)" if not n_docs else ""
        raise InputError(f"corpus source {source!r} has fewer tokens than one context of {ctx}{empty}")
    texts = tokenizer.batch_decode(contexts)
    return Contexts(token_ids=contexts, texts=texts, n_tokens=len(contexts) * ctx)
