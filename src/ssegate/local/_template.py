"""Chat prompts: the GGUF's Jinja chat template rendered into token ids.

Models ship their prompt format as a Jinja template (``tokenizer.chat_template``,
the same text as Hugging Face's ``chat_template``). It is rendered in jinja2's
sandbox with the variables Hugging Face passes (``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token``, ``raise_exception``).

Message contents are user input and must never turn into control tokens. So the
template is rendered with a sentinel in place of each content; the template's own
text between sentinels is tokenised with control tokens recognised, and each
content is tokenised as plain text. A template that alters the contents (trims them,
say) is detected by rendering once more with the real contents; then the whole
text is tokenised at once, which is safe only if no content spells a control
token, so such a message is refused with a clear error.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._tokenizer import Tokenizer

__all__ = ["ChatTemplate", "Message"]

Message = Mapping[str, str]

_ROLES = frozenset({"system", "user", "assistant", "tool"})

# What SmolLM2-style ChatML looks like, for GGUFs that carry no template.
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> NoReturn:
    raise ValueError(f"chat template refused the messages: {message}")


class ChatTemplate:
    """Render a conversation to prompt token ids with a model's chat template."""

    def __init__(
        self,
        source: str,
        tokenizer: Tokenizer,
        *,
        bos_token: str = "",
        eos_token: str = "",
        default_system: str | None = None,
    ) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ValueError(f"the chat template does not compile: {exc}") from exc
        self.source = source
        self._tokenizer = tokenizer
        self._bos = bos_token
        self._eos = eos_token
        self.default_system = default_system

    def messages(
        self, messages: Sequence[Message], *, system: str | None = None
    ) -> list[dict[str, str]]:
        """Check ``messages`` and put ``system`` (or the default system text) first."""
        out: list[dict[str, str]] = []
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, Mapping) else None
            content = message.get("content") if isinstance(message, Mapping) else None
            if role not in _ROLES:
                raise ValueError(
                    f"message {i}: role must be one of {', '.join(sorted(_ROLES))}, not {role!r}"
                )
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be a string, not {content!r}")
            out.append({"role": role, "content": content})
        if not out:
            raise ValueError("at least one message is needed")
        has_system = out[0]["role"] == "system"
        if system is not None:
            out = [{"role": "system", "content": system}, *(out[1:] if has_system else out)]
        elif not has_system and self.default_system is not None:
            out = [{"role": "system", "content": self.default_system}, *out]
        return out

    def render(self, messages: Sequence[Message], *, system: str | None = None) -> str:
        """The prompt text, for display (control tokens appear as their spelling)."""
        return self._render(self.messages(messages, system=system), add_generation_prompt=True)

    def encode(self, messages: Sequence[Message], *, system: str | None = None) -> list[int]:
        """The prompt's token ids, ending where the assistant's answer begins."""
        checked = self.messages(messages, system=system)
        text = self._render(checked, add_generation_prompt=True)
        marks = [f"\x00{uuid.uuid4().hex}{i}\x00" for i in range(len(checked))]
        masked = [{"role": m["role"], "content": k} for m, k in zip(checked, marks, strict=True)]
        rest = self._render(masked, add_generation_prompt=True)
        pieces: list[tuple[str, bool]] = []  # (text, is user content)
        for mark, message in zip(marks, checked, strict=True):
            before, found, rest = rest.partition(mark)
            if not found or mark in rest:
                break
            pieces += [(before, False), (message["content"], True)]
        else:
            pieces.append((rest, False))
            if "".join(p for p, _ in pieces) == text:
                ids: list[int] = []
                for piece, is_content in pieces:
                    ids += self._tokenizer.encode(piece, special=not is_content)
                return ids
        # The template changes the contents (trims them, say), so they cannot be
        # told apart from its own text: safe only if no content spells a control token.
        for message in checked:
            if self._tokenizer.contains_control(message["content"]):
                raise ValueError(
                    "a message spells a control token, and this chat template changes "
                    "message contents, so ssegate cannot keep them apart; remove it"
                )
        return self._tokenizer.encode(text, special=True)

    def _render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        variables: dict[str, Any] = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self._bos,
            "eos_token": self._eos,
        }
        try:
            return self._template.render(**variables)
        except ValueError:
            raise
        except TemplateError as exc:
            raise ValueError(f"the chat template failed: {exc}") from exc
