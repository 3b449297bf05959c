"""Token counting and token-exact text generation for the simulated serving engine.

The simulator counts prompt tokens and produces output text with the small byte-level BPE
tokenizer shipped in ``worker/sim/tokenizer/data`` (built by ``worker.sim.tokenizer.build``).
This module is on the server's hot path, so it imports only ``tokenizers`` (not
``transformers``); loading reads three small files and takes ~7 ms, nearly all of it spent by
``tokenizers`` building the BPE merge table. Counting costs about 1 us per token.

Contracts:

- ``SimTokenizer.count(text)`` is the number of tokens of ``text`` with nothing added: the
  tokenizer has no post-processor and never inserts BOS/EOS, so it equals
  ``len(AutoTokenizer.from_pretrained(dir)(text).input_ids)`` and
  ``len(tok.encode(text, add_special_tokens=False))``. Special-token strings that occur literally
  in ``text`` (e.g. ``"<|eot_id|>"``) count as one token each, as in ``transformers``.
- ``SimTokenizer.count_chat(messages)`` is the length of the token ids that
  ``apply_chat_template(messages, tokenize=True, add_generation_prompt=True)`` returns:
  ``render_chat`` mirrors ``CHAT_TEMPLATE`` character for character and the result is tokenized.
- Chat format (``CHAT_TEMPLATE``)::

      <|begin_of_text|>                          once per conversation
      <|{role}|>{content}<|eot_id|>              per message
      <|assistant|>                              if add_generation_prompt

  Special tokens split the text before byte-level pre-tokenization, so for roles system, user,
  assistant and tool (each a single special token) a conversation costs exactly
  ``1 + sum(2 + count(content)) + 1`` tokens (the last 1 only with the generation prompt).
  Any other role renders as plain text ``<|role|>`` and costs more, still counted exactly.
  ``content`` may be a string or an OpenAI-style list of parts; text parts are concatenated with
  no separator and other parts (images, ...) render as nothing.
- Generation words: ``word_tokens`` holds strings such as ``" the"`` that are each exactly one
  token, and any concatenation of them tokenizes to exactly one token per word (the builder
  verifies this on random sequences and drops words that break it). ``text_for(n, start)`` is
  therefore exactly ``n`` tokens long for every ``n >= 0`` and ``start``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

DEFAULT_TOKENIZER_DIR: Path = Path(__file__).resolve().parent / "tokenizer" / "data"

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Generation words and build provenance; transformers ignores this file.
SIM_VOCAB_FILE = "sim_vocab.json"
SIM_VOCAB_FORMAT = 1

BOS_TOKEN = "<|begin_of_text|>"
END_OF_TEXT_TOKEN = "<|end_of_text|>"
EOT_TOKEN = "<|eot_id|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS: dict[str, str] = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "tool": "<|tool|>",
}
# Order fixes the ids: special tokens take the last ids of the vocabulary, in this order.
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS_TOKEN,
    END_OF_TEXT_TOKEN,
    EOT_TOKEN,
    PAD_TOKEN,
    *ROLE_TOKENS.values(),
)

# Written on one line with no whitespace outside the tags, so transformers' trim_blocks and
# lstrip_blocks settings cannot change the output and render_chat can mirror it exactly. BOS is a
# literal rather than the bos_token variable so renderers that do not pass special-token
# variables produce the same text.
CHAT_TEMPLATE = (
    BOS_TOKEN + "{% for message in messages %}"
    "<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] is iterable %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}" + EOT_TOKEN + "{% endfor %}"
    "{% if add_generation_prompt %}" + ROLE_TOKENS["assistant"] + "{% endif %}"
)
# Tokens the template adds around the contents, for roles that are special tokens.
CHAT_TOKENS_PER_CONVERSATION = 1
CHAT_TOKENS_PER_MESSAGE = 2
CHAT_TOKENS_GENERATION_PROMPT = 1


def _content_text(content: Any) -> str:
    """The text CHAT_TEMPLATE renders for one message's content (None or missing: nothing)."""
    if isinstance(content, str):
        return content
    # Jinja iterates a mapping's keys (strings, never text parts) and skips non-iterables.
    if content is None or isinstance(content, Mapping) or not isinstance(content, Iterable):
        return ""
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, Mapping) and part.get("type") == "text"
    )


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """The exact string CHAT_TEMPLATE renders for ``messages`` (see the module docstring)."""
    pieces = [BOS_TOKEN]
    for message in messages:
        # Jinja renders a missing key as "" and other values with str().
        pieces.append(f"<|{message.get('role', '')}|>")
        pieces.append(_content_text(message.get("content")))
        pieces.append(EOT_TOKEN)
    if add_generation_prompt:
        pieces.append(ROLE_TOKENS["assistant"])
    return "".join(pieces)


class SimTokenizer:
    """Token counting, encoding and token-exact generation text for one tokenizer directory."""

    def __init__(
        self, tokenizer: Tokenizer, word_tokens: Sequence[str], word_token_ids: Sequence[int]
    ) -> None:
        if not word_tokens or len(word_tokens) != len(word_token_ids):
            raise ValueError("word_tokens must be non-empty and match word_token_ids")
        self._tokenizer = tokenizer
        self.word_tokens: tuple[str, ...] = tuple(word_tokens)
        self.word_token_ids: tuple[int, ...] = tuple(word_token_ids)
        # text_for slices one joined cycle of all words instead of joining n strings per call.
        self._cycle = "".join(self.word_tokens)
        offsets = [0]
        for word in self.word_tokens:
            offsets.append(offsets[-1] + len(word))
        self._offsets: tuple[int, ...] = tuple(offsets)
        self.bos_token_id: int = self._special_id(BOS_TOKEN)
        self.eos_token_id: int = self._special_id(EOT_TOKEN)
        self.pad_token_id: int = self._special_id(PAD_TOKEN)

    @classmethod
    def load(cls, path: Path | str | None = None) -> SimTokenizer:
        """Load the tokenizer directory ``path`` (default: DEFAULT_TOKENIZER_DIR).

        Raises ValueError when the directory's chat template or vocabulary file is not the one
        this module mirrors, because count_chat would then silently disagree with transformers.
        """
        directory = DEFAULT_TOKENIZER_DIR if path is None else Path(path)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        config = json.loads((directory / TOKENIZER_CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("chat_template") != CHAT_TEMPLATE:
            raise ValueError(f"{directory}: chat_template differs from tokens.CHAT_TEMPLATE")
        sim_vocab = json.loads((directory / SIM_VOCAB_FILE).read_text(encoding="utf-8"))
        if sim_vocab.get("format") != SIM_VOCAB_FORMAT:
            raise ValueError(f"{directory}: unsupported {SIM_VOCAB_FILE} format")
        return cls(tokenizer, sim_vocab["generation_words"], sim_vocab["generation_token_ids"])

    def _special_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer lacks special token {token}")
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (shared; do not reconfigure it)."""
        return self._tokenizer

    def encode_ids(self, text: str) -> list[int]:
        """Token ids of ``text``; nothing is added (no BOS/EOS)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """Number of tokens of ``text``; equals ``len(encode_ids(text))``."""
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept; ``decode(encode_ids(s)) == s`` for any str."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def count_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> int:
        """Tokens of the rendered chat template; see the module docstring for the cost."""
        return self.count(render_chat(messages, add_generation_prompt))

    def word_at(self, position: int) -> str:
        """The generation word at ``position`` of the infinite cycle text_for reads from."""
        return self.word_tokens[position % len(self.word_tokens)]

    def word_id_at(self, position: int) -> int:
        """The token id of ``word_at(position)``."""
        return self.word_token_ids[position % len(self.word_token_ids)]

    def text_for(self, n: int, start: int = 0) -> str:
        """Exactly ``n`` tokens of text: ``word_at(start) + ... + word_at(start + n - 1)``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        size = len(self.word_tokens)
        begin = start % size
        cycles, end = divmod(begin + n, size)
        if cycles == 0:
            return self._cycle[self._offsets[begin] : self._offsets[end]]
        return (
            self._cycle[self._offsets[begin] :]
            + self._cycle * (cycles - 1)
            + self._cycle[: self._offsets[end]]
        )
