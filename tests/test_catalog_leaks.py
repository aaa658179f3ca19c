"""No catalog domain's documents share long word n-grams with another catalog domain's: whichever documents a
split holds out of domain A, a multi-domain run training on domain B never trains on A's held-out text."""

import itertools
import re

from scarce.data.corpora import CATALOG, load_documents

SHINGLE_WORDS = 8
# Measured with the exclusions in STDLIB_EXCLUDED_FILES: at most 1.2% of a document's 8-grams (common code
# and prose phrases); a copied document shares all of them (pydoc_data/topics.py held every pydoc-topics
# document verbatim, pdb.py 30% of its "debugger" topic).
MAX_SHARED_FRACTION = 0.05
# Code keeps text in string literals, its line breaks written as escapes: read them as the breaks they are.
ESCAPE = re.compile(r"\\[ntr]")
WORD = re.compile(r"\w+")


def shingles(document: str) -> set[int]:
    words = WORD.findall(ESCAPE.sub(" ", document).lower())
    return {hash(tuple(words[i:i + SHINGLE_WORDS])) for i in range(len(words) - SHINGLE_WORDS + 1)}


def test_no_catalog_domain_shares_long_ngrams_with_another():
    # every document, not one split's held-out ones: data.split_seed may hold out any of them
    documents = {name: [s for s in map(shingles, load_documents(name)) if s] for name in CATALOG}
    every = {name: set().union(*sets) for name, sets in documents.items()}
    for held_out, trained in itertools.permutations(CATALOG, 2):
        shared = max(len(s & every[trained]) / len(s) for s in documents[held_out])
        assert shared <= MAX_SHARED_FRACTION, (held_out, trained, shared)
