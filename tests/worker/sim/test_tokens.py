"""Tests of the simulator's shipped tokenizer (worker/sim/tokenizer) and worker.sim.tokens.

Every property is checked against both the ``tokenizers`` object SimTokenizer uses and the
``transformers`` tokenizer that benchmark clients load with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.sim import tokens
from worker.sim.tokens import DEFAULT_TOKENIZER_DIR, SimTokenizer, render_chat

REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_FILES = (tokens.TOKENIZER_FILE, tokens.TOKENIZER_CONFIG_FILE, tokens.SIM_VOCAB_FILE)

UNICODE_SAMPLES = (
    "",
    " ",
    "hello world",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "Shall I compare thee to a summer's day?",
    "naïve café, Straße, ĳ, ﬁ ligature",
    "e\u0301 combining acute, \u200b zero width, \ufeff BOM",
    "中文字符与日本語のテキスト, 한국어",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇩🇪",
    "math ∑∫√∞ ≠ ≤, arrows ←→",
    "control \x00\x01\x7f\x1b[0m chars",
    "".join(chr(code) for code in range(256)),
    "literal specials <|eot_id|><|user|> in text",
    "code: def f(x):\n    return x ** 2  # comment\n",
)


@pytest.fixture(scope="module")
def sim() -> SimTokenizer:
    return SimTokenizer.load()


@pytest.fixture(scope="module")
def hf_tokenizer() -> Iterator[Any]:
    """The shipped directory loaded by transformers with the Hub switched off."""
    transformers = pytest.importorskip("transformers")
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        # huggingface_hub reads the variable once at import; an earlier import may have run.
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield transformers.AutoTokenizer.from_pretrained(str(DEFAULT_TOKENIZER_DIR))


def _random_words(sim: SimTokenizer, n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(len(sim.word_tokens)) for _ in range(n)]


def test_transformers_loads_offline_with_vocab_and_special_tokens(hf_tokenizer: Any) -> None:
    """AutoTokenizer loads the shipped directory offline: 8192 ids, BOS/EOS/PAD as documented."""
    assert len(hf_tokenizer) == 8192
    assert hf_tokenizer.bos_token == tokens.BOS_TOKEN
    assert hf_tokenizer.eos_token == tokens.EOT_TOKEN
    assert hf_tokenizer.pad_token == tokens.PAD_TOKEN
    for token in tokens.SPECIAL_TOKENS:
        assert hf_tokenizer.convert_tokens_to_ids(token) >= 8192 - len(tokens.SPECIAL_TOKENS)


def test_sim_tokenizer_ids_match_transformers(sim: SimTokenizer, hf_tokenizer: Any) -> None:
    """SimTokenizer's special-token ids and vocabulary size agree with transformers'."""
    assert sim.vocab_size == len(hf_tokenizer)
    assert sim.bos_token_id == hf_tokenizer.bos_token_id
    assert sim.eos_token_id == hf_tokenizer.eos_token_id
    assert sim.pad_token_id == hf_tokenizer.pad_token_id


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_encoding_adds_no_tokens(sim: SimTokenizer, hf_tokenizer: Any, text: str) -> None:
    """tok(text), tok.encode(text, add_special_tokens=False) and SimTokenizer give equal ids."""
    ids = sim.encode_ids(text)
    assert hf_tokenizer(text).input_ids == ids
    assert hf_tokenizer.encode(text) == ids
    assert hf_tokenizer.encode(text, add_special_tokens=False) == ids
    assert sim.count(text) == len(ids)


def test_sonnet_lines_count_the_same_in_both_libraries(
    sim: SimTokenizer, hf_tokenizer: Any
) -> None:
    """Every prompt line of genai-bench's sonnet dataset has the same token count in both."""
    if importlib.util.find_spec("genai_bench") is None:
        pytest.skip("genai_bench is not installed")
    from worker.sim.tokenizer.build import sonnet_lines

    for line in sonnet_lines():
        assert sim.count(line) == len(hf_tokenizer.encode(line, add_special_tokens=False))


def test_generation_words_are_distinct_single_tokens(sim: SimTokenizer, hf_tokenizer: Any) -> None:
    """There are >= 500 distinct generation words and each one encodes to its own single id."""
    assert len(sim.word_tokens) >= 500
    assert len(set(sim.word_tokens)) == len(sim.word_tokens)
    hf_ids = hf_tokenizer(list(sim.word_tokens)).input_ids
    for word, token_id, hf_word_ids in zip(
        sim.word_tokens, sim.word_token_ids, hf_ids, strict=True
    ):
        assert sim.encode_ids(word) == [token_id]
        assert hf_word_ids == [token_id]
        assert sim.decode([token_id]) == word


@pytest.mark.parametrize("n", [1, 2, 3, 17, 256, 2000])
def test_random_word_sequences_are_one_token_per_word(
    sim: SimTokenizer, hf_tokenizer: Any, n: int
) -> None:
    """Any random concatenation of n generation words re-tokenizes to exactly those n ids."""
    rng = random.Random(n)
    trials = 50 if n <= 256 else 10
    for _ in range(trials):
        positions = _random_words(sim, n, rng)
        text = "".join(sim.word_tokens[p] for p in positions)
        expected = [sim.word_token_ids[p] for p in positions]
        assert sim.encode_ids(text) == expected
        assert sim.count(text) == n
        assert hf_tokenizer(text).input_ids == expected


@pytest.mark.parametrize("n", [0, 1, 256, 1023, 1024, 1025, 2000, 5000])
@pytest.mark.parametrize("start", [0, 7, -3, 10**9 + 7])
def test_text_for_is_exactly_n_tokens(
    sim: SimTokenizer, hf_tokenizer: Any, n: int, start: int
) -> None:
    """text_for(n, start) is word_at(start..start+n-1) joined, and exactly n tokens in both."""
    text = sim.text_for(n, start)
    assert text == "".join(sim.word_at(start + k) for k in range(n))
    expected = [sim.word_id_at(start + k) for k in range(n)]
    assert sim.encode_ids(text) == expected
    assert len(hf_tokenizer(text).input_ids) == n


def test_text_for_rejects_negative_length(sim: SimTokenizer) -> None:
    """A negative token count is an error, not an empty string."""
    with pytest.raises(ValueError):
        sim.text_for(-1)


# Roles that are special tokens and string contents: the documented cost formula applies.
PLAIN_CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Shall I compare thee to a summer's day?"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Rough winds do shake the darling buds of May,"},
    ],
    [
        {"role": "user", "content": " leading space\n\nand blank lines\n"},
        {"role": "assistant", "content": "\nAn answer. "},
        {"role": "user", "content": "Follow-up: 😀 ü 中文"},
    ],
    [{"role": "user", "content": ""}],
    [{"role": "tool", "content": '{"result": 42}'}, {"role": "user", "content": "ok"}],
]
# transformers refuses an empty conversation, so it is not compared.
CONVERSATIONS: list[list[dict[str, Any]]] = PLAIN_CONVERSATIONS + [
    [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe "},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "this image."},
            ],
        }
    ],
    [{"role": "assistant", "content": None}, {"role": "assistant"}],
    [{"role": "developer", "content": "an unknown role renders as text"}],
    [{"role": "user", "content": "literal <|eot_id|> and <|assistant|> inside content"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_count_chat_equals_apply_chat_template(
    sim: SimTokenizer,
    hf_tokenizer: Any,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
) -> None:
    """render_chat equals the Jinja rendering and count_chat equals its tokenized length."""
    rendered = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert render_chat(messages, add_generation_prompt) == rendered
    ids = hf_tokenizer.apply_chat_template(
        messages,
        tokenize=True,
        add_generation_prompt=add_generation_prompt,
        return_dict=False,
    )
    assert sim.count_chat(messages, add_generation_prompt) == len(ids)
    assert sim.encode_ids(rendered) == list(ids)


def test_chat_cost_is_documented_formula(sim: SimTokenizer) -> None:
    """For special-token roles a chat costs 1 + sum(2 + count(content)) + 1 (generation prompt)."""
    rng = random.Random(3)
    for messages in PLAIN_CONVERSATIONS:
        contents = [m["content"] for m in messages]
        expected = tokens.CHAT_TOKENS_PER_CONVERSATION + sum(
            tokens.CHAT_TOKENS_PER_MESSAGE + sim.count(c) for c in contents
        )
        assert sim.count_chat(messages, add_generation_prompt=False) == expected
        assert sim.count_chat(messages) == expected + tokens.CHAT_TOKENS_GENERATION_PROMPT
    # Generated text inside a message keeps its exact token count.
    n = rng.randrange(1, 3000)
    messages = [{"role": "user", "content": sim.text_for(n, rng.randrange(10**6))}]
    assert sim.count_chat(messages) == 1 + 2 + n + 1


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_decode_encode_round_trips(sim: SimTokenizer, hf_tokenizer: Any, text: str) -> None:
    """decode(encode(s)) == s for both libraries (byte-level BPE with no normalization)."""
    assert sim.decode(sim.encode_ids(text)) == text
    assert hf_tokenizer.decode(hf_tokenizer.encode(text)) == text


def test_random_code_points_round_trip(sim: SimTokenizer, hf_tokenizer: Any) -> None:
    """Random strings over all Unicode planes (no surrogates) encode and decode losslessly."""
    rng = random.Random(11)
    for _ in range(200):
        chars = []
        for _ in range(rng.randrange(1, 80)):
            code = rng.choice((rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0x110000)))
            chars.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "?")
        text = "".join(chars)
        ids = sim.encode_ids(text)
        assert sim.decode(ids) == text
        assert hf_tokenizer.decode(ids) == text


def test_sim_tokens_imports_no_transformers() -> None:
    """worker.sim.tokens stays off transformers (server startup cost)."""
    code = "import sys, worker.sim.tokens; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_load_rejects_a_foreign_chat_template(tmp_path: Path) -> None:
    """Loading a directory whose template differs fails, since count_chat would be wrong."""
    for name in SHIPPED_FILES:
        shutil.copyfile(DEFAULT_TOKENIZER_DIR / name, tmp_path / name)
    config_path = tmp_path / tokens.TOKENIZER_CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = "{{ messages }}"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="chat_template"):
        SimTokenizer.load(tmp_path)


def test_shipped_directory_is_small_and_complete() -> None:
    """The data directory holds exactly the build's files, together well under 1 MB."""
    present = sorted(p.name for p in DEFAULT_TOKENIZER_DIR.iterdir())
    assert present == sorted(SHIPPED_FILES)
    assert sum((DEFAULT_TOKENIZER_DIR / n).stat().st_size for n in SHIPPED_FILES) < 512 * 1024


def test_build_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    """A rebuild from the same corpus reproduces the shipped files byte for byte.

    If this environment's corpus differs from the one the shipped files were built from (another
    Python patch release changes docstrings), two fresh builds must agree instead, and a warning
    says the shipped files could not be compared.
    """
    if importlib.util.find_spec("genai_bench") is None:
        pytest.skip("genai_bench, which provides the sonnet corpus, is not installed")
    from worker.sim.tokenizer.build import build

    first = build(tmp_path / "first")
    shipped_vocab = json.loads((DEFAULT_TOKENIZER_DIR / tokens.SIM_VOCAB_FILE).read_text())
    if first.corpus_sha256 == shipped_vocab["corpus_sha256"]:
        reference = DEFAULT_TOKENIZER_DIR
    else:
        warnings.warn(
            "corpus differs from the shipped build's; compared two fresh builds instead",
            stacklevel=1,
        )
        reference = build(tmp_path / "second").output_dir
    for name in SHIPPED_FILES:
        assert (first.output_dir / name).read_bytes() == (reference / name).read_bytes(), name
