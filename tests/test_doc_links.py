"""Every docs page the code names exists: a comment that cites a page a reader cannot open is a broken promise."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = re.compile(r"\bdocs/[\w./-]+\.md\b")


def test_every_docs_page_named_in_the_code_exists():
    named = {(path.relative_to(ROOT).as_posix(), page) for path in (ROOT / "src").rglob("*.py")
             for page in DOC_PATH.findall(path.read_text())}
    assert named  # the pattern finds the pages the code names
    missing = sorted((source, page) for source, page in named if not (ROOT / page).is_file())
    assert not missing, missing
