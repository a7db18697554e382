"""Byte-level tokenizer: token = byte value. Used for byte models (vocab_size >= 256)."""
from __future__ import annotations

from pathlib import Path

from mflc.ir.errors import ConfigError


class ByteTokenizer:
    def __init__(self, vocab_size: int):
        if vocab_size < 256:
            raise ConfigError(f"byte-level tokenization needs vocab_size >= 256, the model has {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str | bytes) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def decode(self, tokens) -> str:
        return bytes(int(t) for t in tokens if 0 <= int(t) < 256).decode("utf-8", errors="replace")


def tokenizer_for(model_dir: Path | None, vocab_size: int):
    """The byte tokenizer; a tokenizer.json beside the checkpoint is reported as unsupported, never ignored."""
    if model_dir is not None and (Path(model_dir) / "tokenizer.json").is_file() and vocab_size != 256:
        raise ConfigError(f"{Path(model_dir) / 'tokenizer.json'}: subword tokenizers are not supported yet; "
                          "mflc handles byte-level models (vocab_size 256)")
    return ByteTokenizer(vocab_size)
