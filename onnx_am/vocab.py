"""Token ids as text: a vocabulary read from ``tokenizer.json``, ``vocab.txt`` or a JSON map.

- ``tokenizer.json`` (Hugging Face): read with the ``tokenizers`` library (the optional
  ``onnx-am[text]`` extra), which also decodes a sequence to text as the model's tokenizer
  would;
- ``vocab.txt``: one token per line, line ``i`` is id ``i`` (BERT's WordPiece files);
- any other ``.json``: an object ``{"token": id, ...}``.

Without a file, a vocabulary of 256 tokens is read as bytes (a byte model's one-hot).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onnx_am.errors import SettingsError, one_line

BYTES = 256


@dataclass(frozen=True)
class Vocabulary:
    """Id -> token string, and a decoder for whole sequences.

    Attributes:
        tokens: token ``i`` at index ``i`` (``""`` for an id the file leaves out).
        source: where it came from (a file name, or ``"bytes"``).
        tokenizer: a ``tokenizers.Tokenizer`` when read from ``tokenizer.json``.
    """

    tokens: tuple[str, ...]
    source: str
    tokenizer: object | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tokens[i] if 0 <= i < len(self.tokens) else f"<{i}>" for i in ids]

    def text(self, ids: Sequence[int]) -> str:
        """The sequence as text: the tokenizer's decoding, bytes as a Python bytes literal,
        else the tokens joined by spaces."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(list(ids), skip_special_tokens=False)
        if self.source == "bytes":  # escaped, as Python shows bytes: b'MZ\x90\x00'
            return repr(bytes(int(i) for i in ids))
        return " ".join(self.pieces(ids))


def byte_vocabulary() -> Vocabulary:
    """Ids 0..255 as the bytes they stand for (``repr`` of one byte, e.g. ``'\\x00'``)."""
    return Vocabulary(tuple(repr(bytes([i]))[2:-1] for i in range(BYTES)), "bytes")


def load_vocabulary(path: str | Path, vocab_size: int) -> Vocabulary:
    """Read a vocabulary file and check it against the model's ``vocab_size`` rows.

    Raises:
        SettingsError: a missing or unreadable file, a tokenizer file that does not parse,
            ``tokenizers`` not installed, or a size other than ``vocab_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"vocabulary file not found: {path}")
    if path.name.endswith("tokenizer.json"):
        vocab = _from_tokenizer(path)
    elif path.suffix == ".json":
        vocab = _from_map(path)
    else:
        vocab = _from_lines(path)
    if len(vocab) != vocab_size:
        raise SettingsError(
            f"vocabulary {path.name} has {len(vocab)} tokens but the embedding has "
            f"{vocab_size} rows; give the vocabulary the model was trained with"
        )
    return vocab


def _from_tokenizer(path: Path) -> Vocabulary:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise SettingsError(
            f"reading {path.name} needs the tokenizers library: pip install 'onnx-am[text]' "
            "(or give a vocab.txt or a JSON token->id map)"
        ) from exc
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise SettingsError(f"tokenizer file {path} does not parse: {one_line(exc, 160)}") from exc
    mapping = tokenizer.get_vocab(with_added_tokens=True)
    return Vocabulary(_ordered(mapping, path), path.name, tokenizer)


def _from_map(path: Path) -> Vocabulary:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"vocabulary {path} is not valid JSON: {one_line(exc, 160)}") from exc
    if isinstance(mapping, dict) and isinstance(mapping.get("model"), dict):
        mapping = mapping["model"].get("vocab")  # a tokenizer.json under another name
    if not isinstance(mapping, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()
    ):
        raise SettingsError(f"vocabulary {path} is not a JSON object mapping tokens to int ids")
    return Vocabulary(_ordered(mapping, path), path.name)


def _from_lines(path: Path) -> Vocabulary:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"vocabulary {path} is not a UTF-8 text file: {one_line(exc, 160)}"
        ) from exc
    if lines and lines[-1] == "":
        lines.pop()
    return Vocabulary(tuple(lines), path.name)


def _ordered(mapping: dict, path: Path) -> tuple[str, ...]:
    if not mapping:
        return ()
    size = max(mapping.values()) + 1
    if min(mapping.values()) < 0 or size > 10 * len(mapping) + 1024:
        raise SettingsError(f"vocabulary {path} has ids outside 0..{len(mapping) - 1}")
    tokens = [""] * size
    for token, index in mapping.items():
        tokens[index] = str(token)
    return tuple(tokens)
