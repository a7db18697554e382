"""Tokenizers: bytes for byte-level models, a Hugging Face ``tokenizer.json`` for subword ones.

The released MatMul-free LMs ship a Llama/Mistral-style ``tokenizer.json`` beside the checkpoint; it is
read with the ``tokenizers`` library (offline, from the file), so that ``eval --text`` and ``generate``
score and write real text for them. The tokenizer files travel with the model into quantized and build
directories (``copy_tokenizer``), so a build remembers how its tokens are spelled. A checkpoint without
``tokenizer.json`` is taken to be byte-level (token = byte value); that needs vocab_size >= 256.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mflc.ir.errors import CheckpointError, ConfigError

TOKENIZER_JSON = "tokenizer.json"
# Copied with the model; only tokenizer.json is read (the others document special tokens for humans).
TOKENIZER_FILES = (TOKENIZER_JSON, "tokenizer_config.json", "special_tokens_map.json")


def _as_text(text: str | bytes, source: str) -> str:
    if isinstance(text, str):
        return text
    try:
        return bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}: {e.reason}); a subword tokenizer "
                          "reads text, not raw bytes") from None


class ByteTokenizer:
    """Tokens as UTF-8 bytes, for byte-level models (vocab_size >= 256) without a tokenizer.json."""

    kind = "bytes"

    def __init__(self, vocab_size: int):
        if vocab_size < 256:
            raise ConfigError(f"byte-level tokenization needs vocab_size >= 256, the model has {vocab_size} "
                              f"(a subword model needs its {TOKENIZER_JSON} beside config.json)")
        self.vocab_size = vocab_size

    def encode(self, text: str | bytes, source: str = "text") -> list[int]:
        """The text's UTF-8 bytes as token ids."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def decode(self, tokens) -> str:
        """Token ids back to text, ids outside a byte dropped and bad UTF-8 replaced."""
        return bytes(int(t) for t in tokens if 0 <= int(t) < 256).decode("utf-8", errors="replace")

    def encode_spans(self, text: str | bytes, source: str = "text") -> tuple[list[int], np.ndarray]:
        """Token ids and, per token, the UTF-8 byte offset where it ends (here simply 1, 2, 3, ...)."""
        ids = self.encode(text, source)
        return ids, np.arange(1, len(ids) + 1, dtype=np.int64)

    def decode_continuation(self, prompt, new) -> str:
        """The text of newly generated tokens (bytes need no prompt context to decode)."""
        return self.decode(new)

    def start_tokens(self) -> list[int]:
        """What an empty prompt feeds the model: a newline, the start of a fresh line of text."""
        return [ord("\n")]


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``: its normaliser, pre-tokeniser, model and
    post-processor (which adds BOS for the Llama family) run as the training framework ran them."""

    kind = "tokenizer.json"

    def __init__(self, path: Path, vocab_size: int):
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - a core dependency
            raise ConfigError(f"{path}: reading a subword tokenizer needs the 'tokenizers' package "
                              "(pip install tokenizers)") from None
        self.path = Path(path)
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises bare Exceptions for malformed files
            raise CheckpointError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self.n = self.tok.get_vocab_size(with_added_tokens=True)
        if self.n > vocab_size:
            raise ConfigError(f"{path}: the tokenizer has {self.n:,} tokens, more than the model's vocab_size "
                              f"{vocab_size:,} (config field 'vocab_size'): ids >= {vocab_size:,} have no embedding")
        self.vocab_size = vocab_size

    def _encode(self, s: str, source: str):
        try:
            return self.tok.encode(s)
        except Exception as e:  # the library raises bare Exceptions, e.g. "Missing [UNK] token from the vocabulary"
            shown = s if len(s) <= 60 else s[:57] + "..."
            raise ConfigError(f"{source} {shown!r}: the tokenizer {self.path} cannot encode it "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def encode(self, text: str | bytes, source: str = "text") -> list[int]:
        """The text's token ids under the model's subword tokenizer."""
        return list(self._encode(_as_text(text, source), source).ids)

    def encode_spans(self, text: str | bytes, source: str = "text") -> tuple[list[int], np.ndarray]:
        """Token ids and, per token, the UTF-8 byte offset of the text where it ends: what bits per byte
        divides by. The library's offsets count characters; a prefix sum of each character's UTF-8 length
        turns them into bytes. Special tokens (BOS) end where the text before them does (offset 0)."""
        s = _as_text(text, source)
        enc = self._encode(s, source)
        char_bytes = np.zeros(len(s) + 1, np.int64)
        if s:
            # code points: < 0x80 -> 1 byte, < 0x800 -> 2, < 0x10000 -> 3, else 4
            cp = np.frombuffer(s.encode("utf-32-le"), dtype="<u4")
            char_bytes[1:] = np.cumsum(1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000))
        ends = np.array([e for _, e in enc.offsets], dtype=np.int64)
        ends = np.maximum.accumulate(ends) if ends.size else ends      # specials after text keep its end
        return list(enc.ids), char_bytes[ends]

    def decode(self, tokens) -> str:
        """Token ids back to text, ids beyond the tokenizer's vocabulary dropped."""
        # Ids of the model's padded vocabulary beyond the tokenizer's have no spelling: dropped.
        return self.tok.decode([int(t) for t in tokens if 0 <= int(t) < self.n], skip_special_tokens=True)

    def decode_continuation(self, prompt, new) -> str:
        """The text ``new`` adds after ``prompt``. Decoding ``new`` alone can be wrong: a Llama decoder
        strips the leading space of what it decodes, and a character split over byte-fallback tokens
        needs its first bytes. So decode both and take the difference."""
        head = self.decode(prompt)
        whole = self.decode(list(prompt) + list(new))
        return whole[len(head):] if whole.startswith(head) else self.decode(new)

    def start_tokens(self) -> list[int]:
        """What an empty prompt feeds the model: the post-processor's special tokens (BOS), else id 0."""
        return self.encode("") or [0]


def tokenizer_dir(path: Path | None) -> Path | None:
    """Where a model's tokenizer files are: the directory itself, or a build's ``quant/``."""
    if path is None:
        return None
    for d in (Path(path), Path(path) / "quant"):
        if (d / TOKENIZER_JSON).is_file():
            return d
    return None


def tokenizer_for(model_dir: Path | None, vocab_size: int):
    """The model's ``tokenizer.json`` if it has one, else bytes."""
    d = tokenizer_dir(model_dir)
    if d is not None:
        return HFTokenizer(d / TOKENIZER_JSON, vocab_size)
    return ByteTokenizer(vocab_size)


def copy_tokenizer(src: Path | None, dst: Path) -> list[str]:
    """Copy the tokenizer files that ``src`` (a model, quantized or build directory) has into ``dst``."""
    d = tokenizer_dir(src)
    if d is None or Path(d).resolve() == Path(dst).resolve():
        return []
    Path(dst).mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (d / name).is_file():
            shutil.copyfile(d / name, Path(dst) / name)
            copied.append(name)
    return copied
