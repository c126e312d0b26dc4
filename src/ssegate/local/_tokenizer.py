"""The model's byte-level BPE tokenizer, built from the GGUF's own vocabulary and merges.

``tokenizer.ggml.model = "gpt2"`` is GPT-2's byte-level BPE: every byte maps to a
printable character (``bytes_to_unicode``), the vocabulary and merges are spelt in
those characters, and text is split before BPE by a regular expression. The
``tokenizer.ggml.pre`` value names the splitting; for ``smollm`` (and the other
StarCoder-family names below) llama.cpp splits every digit on its own and then
applies GPT-2's expression, which is what ``tokenizers``' ``Digits(individual)``
followed by ``ByteLevel`` does.

Control tokens (``token_type == 3``: ``<|im_start|>``, ``<|im_end|>``...) are
*not* registered with ``tokenizers`` as special: then user text that happens to
contain ``<|im_start|>`` is encoded as the plain text it is. Only ``encode(...,
special=True)``, used for the chat template's own text, turns those spellings
into control-token ids.

A vocabulary may lack some byte tokens (SmolLM2's has none for 21 bytes, such as
0x04 and the UTF-8 lead bytes of code points from U+40000 up); those bytes are
left out of the ids, as llama.cpp does, rather than turned into an "unknown"
token that is in fact the control token ``<|endoftext|>``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

__all__ = ["StreamDecoder", "Tokenizer"]

_CONTROL = 3  # llama_token_type LLAMA_TOKEN_TYPE_CONTROL

# tokenizer.ggml.pre values whose splitting is "each digit alone, then GPT-2's
# expression" (llama.cpp, llama-vocab.cpp); others are refused, not guessed.
_DIGITS_THEN_GPT2 = frozenset(
    {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
)
_GPT2 = frozenset({"default", "gpt2", "gpt-2"})
_SURROGATE = re.compile("[\ud800-\udfff]")


@cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable character -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class Tokenizer:
    """Encode text to token ids and ids back to bytes, as the GGUF defines them."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int] | None = None,
        *,
        pre: str = "gpt2",
        eos_id: int | None = None,
        bos_id: int | None = None,
    ) -> None:
        if pre in _DIGITS_THEN_GPT2:
            digits = True
        elif pre in _GPT2:
            digits = False
        else:
            raise ValueError(
                f"unsupported tokenizer.ggml.pre {pre!r}; supported: "
                f"{', '.join(sorted(_DIGITS_THEN_GPT2 | _GPT2))}"
            )
        vocab = {tok: i for i, tok in enumerate(tokens)}
        pairs: list[tuple[str, str]] = []
        for merge in merges:
            left, sep, right = merge.partition(" ")
            if not sep:
                raise ValueError(f"bad BPE merge {merge!r}: expected two tokens and a space")
            pairs.append((left, right))
        hf = _HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.pre_tokenizer = (
            pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
            if digits
            else byte_level
        )
        hf.decoder = decoders.ByteLevel()
        self._hf = hf
        self.vocab_size = len(tokens)
        self.eos_id = eos_id
        self.bos_id = bos_id

        types = list(token_types) if token_types is not None else [1] * len(tokens)
        self.control_ids: frozenset[int] = frozenset(
            i for i, kind in enumerate(types) if kind == _CONTROL
        )
        self._control_by_text = {tokens[i]: i for i in self.control_ids}
        self._control_re = (
            re.compile("|".join(re.escape(t) for t in sorted(self._control_by_text, key=len)[::-1]))
            if self._control_by_text
            else None
        )
        table = _byte_decoder()
        self._bytes: list[bytes] = []
        for i, tok in enumerate(tokens):
            if i in self.control_ids:
                self._bytes.append(b"")
            else:
                try:
                    self._bytes.append(bytes(table[c] for c in tok))
                except KeyError:  # not byte-level spelt (user-defined): take it as text
                    self._bytes.append(tok.encode("utf-8"))
        self._tokens = list(tokens)

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> Tokenizer:
        """Build the tokenizer a GGUF file describes in its ``tokenizer.ggml.*`` keys."""
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"tokenizer model {model!r} is not supported (only byte-level 'gpt2')")
        types = metadata.get("tokenizer.ggml.token_type")
        eos = metadata.get("tokenizer.ggml.eos_token_id")
        bos = metadata.get("tokenizer.ggml.bos_token_id")
        return cls(
            metadata["tokenizer.ggml.tokens"],
            metadata["tokenizer.ggml.merges"],
            [int(t) for t in types] if types is not None else None,
            pre=str(metadata.get("tokenizer.ggml.pre", "gpt2")),
            eos_id=int(eos) if eos is not None else None,
            bos_id=int(bos) if bos is not None else None,
        )

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of ``text``.

        With ``special=True`` the spellings of control tokens (``<|im_end|>``) become
        those tokens; otherwise every character is plain text. Use ``special=True``
        only for text you wrote (a chat template), never for user input.
        """
        # A lone surrogate (JSON "\ud800" decodes to one) is no character and
        # cannot be UTF-8 encoded: it becomes U+FFFD, as the WHATWG encoder does.
        text = _SURROGATE.sub("\ufffd", text)
        if not special or self._control_re is None:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        ids: list[int] = []
        pos = 0
        for match in self._control_re.finditer(text):
            if match.start() > pos:
                ids.extend(self._hf.encode(text[pos : match.start()], add_special_tokens=False).ids)
            ids.append(self._control_by_text[match.group()])
            pos = match.end()
        if pos < len(text):
            ids.extend(self._hf.encode(text[pos:], add_special_tokens=False).ids)
        return ids

    def contains_control(self, text: str) -> bool:
        """Whether ``text`` contains the spelling of a control token."""
        return self._control_re is not None and self._control_re.search(text) is not None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for (``b""`` for control tokens)."""
        return self._bytes[token_id]

    def token_text(self, token_id: int) -> str:
        """The vocabulary spelling of a token (``<|im_end|>``, ``Ġthe``), for display."""
        return self._tokens[token_id]

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        """The text of ``ids``; control tokens are left out."""
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors)


class StreamDecoder:
    """Turns token ids into text one at a time, holding back split UTF-8 characters.

    A byte-level token may end in the middle of a multi-byte character (an emoji
    is often two or three tokens); the piece returned for it is then ``""`` and
    the character comes out whole with the token that completes it.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is held back at the end (an unfinished character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)
