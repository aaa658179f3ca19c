import json
import sysconfig

import pytest

from scarce.data.corpora import TEXT_DOCUMENT_BYTES, _stdlib_files, corpus_fingerprint, list_corpora, load_documents
from scarce.errors import ScarceError


def test_catalog_lists_the_embedded_corpora():
    catalog = list_corpora()
    assert {"kjv", "python-stdlib"} <= set(catalog)
    assert all(isinstance(description, str) and description for description in catalog.values())


def test_kjv_is_one_document_per_chapter():
    documents = load_documents("kjv")
    assert len(documents) == 1189
    assert documents[0].startswith("Genesis 1\n")
    assert "In the beginning God created the heaven and the earth." in documents[0]
    assert documents[-1].startswith("Revelation 22\n")


def test_python_stdlib_is_code_without_tests_or_site_packages():
    files = _stdlib_files()
    relative = [file.relative_to(sysconfig.get_paths()["stdlib"]).as_posix() for file in files]
    assert "json/__init__.py" in relative
    assert files == sorted(files)
    assert not [path for path in relative if {"test", "tests", "idlelib", "site-packages"} & set(path.split("/"))]
    documents = load_documents("python-stdlib")
    assert len(documents) > 100 and any("def " in doc for doc in documents)


def test_jsonl_is_one_document_per_line(tmp_path):
    file = tmp_path / "docs.jsonl"
    file.write_text('{"text": "first doc"}\n\n{"text": "second doc", "id": 7}\n{"text": "   "}\n')
    assert load_documents(str(file)) == ["first doc", "second doc"]  # blank line skipped, whitespace doc dropped


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028, U+2029 and NEL raw; they end no JSONL line.
    texts = ["verse one\u2028verse two", "para\u2029graph", "next\x85line", "crlf file"]
    file = tmp_path / "docs.jsonl"
    body = "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts[:3])
    file.write_text(body + "\r\n" + json.dumps({"text": texts[3]}) + "\r\n", encoding="utf-8", newline="")
    assert load_documents(str(file)) == texts


def test_directory_is_recursive_sorted_and_skips_other_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("from b/z")
    (tmp_path / "a.md").write_text("from a")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "from c"}) + "\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\xff")
    (tmp_path / ".hidden.txt").write_text("hidden")
    assert load_documents(str(tmp_path)) == ["from a", "from b/z", "from c"]


def test_large_text_file_is_cut_at_blank_lines(tmp_path):
    paragraph = "word " * 1000
    file = tmp_path / "book.txt"
    file.write_text("\n\n".join(f"{i} {paragraph}" for i in range(40)))
    documents = load_documents(str(file))
    assert len(documents) > 1
    assert all(len(doc.encode()) <= TEXT_DOCUMENT_BYTES for doc in documents)
    assert "\n\n".join(documents) == file.read_text()  # nothing lost, paragraphs never split
    small = tmp_path / "small.txt"
    small.write_text("one\n\ntwo")
    assert load_documents(str(small)) == ["one\n\ntwo"]


def test_unknown_name_lists_the_catalog():
    with pytest.raises(ScarceError, match="no-such-corpus.*kjv.*python-stdlib"):
        load_documents("no-such-corpus")


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ScarceError, match="nope.txt"):
        load_documents(str(missing))
    with pytest.raises(ScarceError, match="nope.txt"):
        corpus_fingerprint(str(missing))


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    with pytest.raises(ScarceError, match="empty"):
        load_documents(str(tmp_path))
    no_files = tmp_path / "only_images"
    no_files.mkdir()
    (no_files / "x.png").write_bytes(b"png")
    with pytest.raises(ScarceError, match="only_images holds no .txt, .md, .jsonl"):
        load_documents(str(no_files))


def test_non_utf8_names_file_and_offset(tmp_path):
    file = tmp_path / "latin1.txt"
    file.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ScarceError, match=r"latin1\.txt.*offset 3"):
        load_documents(str(tmp_path))


def test_bad_jsonl_names_file_and_line(tmp_path):
    not_json = tmp_path / "broken.jsonl"
    not_json.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(ScarceError, match=r"broken\.jsonl, line 2"):
        load_documents(str(not_json))
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(ScarceError, match=r"notext\.jsonl, line 2.*text"):
        load_documents(str(no_text))


def test_fingerprint_follows_content_not_time(tmp_path):
    file = tmp_path / "a.txt"
    file.write_text("hello")
    before = corpus_fingerprint(str(tmp_path))
    file.write_text("hello")  # rewritten, new mtime, same bytes
    assert corpus_fingerprint(str(tmp_path)) == before
    file.write_text("hello!")
    assert corpus_fingerprint(str(tmp_path)) != before
    assert corpus_fingerprint("kjv") == corpus_fingerprint("kjv")


def test_jsonl_lines_longer_than_a_read_are_whole(tmp_path, monkeypatch):
    import scarce.data.corpora as corpora_module

    monkeypatch.setattr(corpora_module, "READ_BYTES", 7)  # every line spans several reads
    texts = ["a" * 40, "short", "b" * 23 + "\u2028" + "c" * 5]
    file = tmp_path / "long.jsonl"
    file.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8")  # no final newline
    assert load_documents(str(file)) == texts
