"""Build the simulator's byte-level BPE tokenizer into a Hugging Face tokenizer directory.

Usage (from the repository root)::

    python -m worker.sim.tokenizer.build [OUTPUT_DIR]    # default: worker/sim/tokenizer/data

Contracts:

- Offline and deterministic: the corpus comes from installed files only and the same corpus gives
  byte-identical output files. ``sim_vocab.json`` records the corpus's SHA-256, so a rebuild
  whose corpus hash matches the shipped one must reproduce the shipped bytes exactly.
- Corpus, in this order: genai-bench's bundled ``sonnet.txt`` (the default text dataset its
  benchmarks sample prompts from) repeated SONNET_WEIGHT times, then the docstrings of the Python
  standard library's modules, classes and functions, read with ``ast`` (nothing is imported),
  files in sorted path order. Both are located through importlib/sysconfig, never a fixed path.
- Output, ``VOCAB_SIZE`` ids in all: a GPT-2 style byte-level BPE (every string encodes, no
  unknown token), then ``tokens.SPECIAL_TOKENS`` with the last ids. Files:
  ``tokenizer.json`` (no normalizer, no post-processor: encoding adds no tokens; readable by
  tokenizers >= 0.19, i.e. transformers 4.44 and later),
  ``tokenizer_config.json`` (``add_bos_token``/``add_eos_token`` false, ``tokens.CHAT_TEMPLATE``)
  and ``sim_vocab.json`` (generation words with their ids, corpus hash). Special tokens are
  listed in tokenizer_config.json, so no special_tokens_map.json is needed.
- Generation words: lower-case words with a leading space that are single tokens, the most
  frequent whole words of the corpus first; words for which a random concatenation does not
  tokenize to one token per word are dropped (see ``select_generation_words``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import random
import re
import sysconfig
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from worker.sim import tokens

VOCAB_SIZE = 8192
# The sonnet's everyday and archaic English ("lovely", "heaven", "hath") is rare in docstrings;
# repeating it gives those words their own tokens as in large production vocabularies. At 6 the
# sonnet averages ~4.1 characters (~10.4 tokens) per line, near the ~4 characters per token of
# production BPE tokenizers on English; 5 gives 3.6, and 7 or more merge every sonnet word into
# one token (4.4, the ceiling), which would flatter this one text.
SONNET_WEIGHT = 6
# A pair seen once is noise, not vocabulary.
MIN_PAIR_FREQUENCY = 2
# Test suites and demos hold little prose and change more between patch releases than the rest.
STDLIB_EXCLUDED_PARTS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages"}
)
GENERATION_WORD_LIMIT = 1024
GENERATION_WORD_PATTERN = re.compile(r"Ġ[a-z]+")  # byte-level form of " word"
# Random concatenations checked; lengths up to 256 words cover every adjacent pair many times.
VERIFY_SEQUENCES = 2000
VERIFY_MAX_WORDS = 256
VERIFY_SEED = 20240601
MODEL_MAX_LENGTH = 131072
SONNET_PACKAGE = "genai_bench"
SONNET_RELATIVE_PATH = ("data", "sonnet.txt")


class BuildError(RuntimeError):
    """The corpus is unavailable or the result violates a contract in the module docstring."""


@dataclass(frozen=True)
class BuildResult:
    """What one build wrote, for the command line summary and tests."""

    output_dir: Path
    files: tuple[Path, ...]
    vocab_size: int
    generation_words: int
    corpus_sha256: str
    sonnet_tokens_per_line: float


def sonnet_path() -> Path:
    """Location of genai-bench's default text dataset, found without importing genai_bench."""
    spec = importlib.util.find_spec(SONNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"package {SONNET_PACKAGE} is not installed; it provides sonnet.txt")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*SONNET_RELATIVE_PATH)
    if not path.is_file():
        raise BuildError(f"{path} not found in the installed {SONNET_PACKAGE}")
    return path


def sonnet_lines(path: Path | None = None) -> list[str]:
    """The sonnet's prompts as genai-bench loads them: stripped, non-empty lines."""
    text = (path or sonnet_path()).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def stdlib_docstrings() -> list[str]:
    """Docstrings of the standard library's .py files, in sorted path then ast.walk order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docstrings: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        # config-3.x-<platform> holds build-configuration scripts that differ between platforms.
        if STDLIB_EXCLUDED_PARTS.intersection(relative.parts) or relative.parts[0].startswith(
            "config-"
        ):
            continue
        if relative.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue  # e.g. templates shipped with a .py suffix; they hold no docstrings
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    docstrings.append(docstring)
    return docstrings


def training_corpus() -> list[str]:
    """The documents the tokenizer is trained on (see the module docstring)."""
    sonnet = sonnet_path().read_text(encoding="utf-8")
    docstrings = stdlib_docstrings()
    if not docstrings:
        raise BuildError("no standard library docstrings found")
    return [sonnet] * SONNET_WEIGHT + docstrings


def corpus_sha256(corpus: Sequence[str]) -> str:
    """Hash of the corpus; documents are length-prefixed so boundaries are part of the hash."""
    digest = hashlib.sha256()
    for document in corpus:
        data = document.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def train_tokenizer(corpus: Sequence[str]) -> Tokenizer:
    """Train the byte-level BPE and append the special tokens (their ids come last)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(tokens.SPECIAL_TOKENS),
        min_frequency=MIN_PAIR_FREQUENCY,
        show_progress=False,
        # All 256 byte symbols, so no string is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens(list(tokens.SPECIAL_TOKENS))
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise BuildError(
            f"vocabulary has {tokenizer.get_vocab_size(with_added_tokens=True)} ids, "
            f"expected {VOCAB_SIZE}; the corpus is too small"
        )
    return tokenizer


def _first_failing_word(
    tokenizer: Tokenizer, words: list[str], ids: dict[str, int], rng: random.Random
) -> str | None:
    """A word at the first divergence of some random concatenation, or None if all pass."""
    sequences = [
        [rng.choice(words) for _ in range(rng.randint(1, VERIFY_MAX_WORDS))]
        for _ in range(VERIFY_SEQUENCES)
    ]
    encodings = tokenizer.encode_batch(["".join(s) for s in sequences], add_special_tokens=False)
    for sequence, encoding in zip(sequences, encodings, strict=True):
        expected = [ids[word] for word in sequence]
        if encoding.ids != expected:
            # The first word whose id is wrong is the one the tokenizer merged or split.
            for position, word in enumerate(sequence):
                if position >= len(encoding.ids) or encoding.ids[position] != ids[word]:
                    return word
            raise BuildError(f"{encoding.ids[len(sequence) :]} follow the expected ids")
    return None


def select_generation_words(tokenizer: Tokenizer, corpus: Sequence[str]) -> list[tuple[str, int]]:
    """Single-token words with their ids, most frequent first, one token per word in any order.

    Each candidate must encode alone to its own id and decode back to itself; then random
    concatenations are re-tokenized and any word at a divergence is dropped, repeating with a
    fresh seeded sample until one full round passes. With the GPT-2 split regex a leading space
    starts a new pre-token, so drops are not expected; the check guards that reasoning.
    """
    assert tokenizer.pre_tokenizer is not None
    frequency: Counter[str] = Counter()
    for document in corpus:
        for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(document):
            if GENERATION_WORD_PATTERN.fullmatch(piece):
                frequency[piece] += 1
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    ids: dict[str, int] = {}
    for piece, _ in sorted(frequency.items(), key=lambda item: (-item[1], item[0])):
        token_id = vocab.get(piece)
        if token_id is None:
            continue
        word = tokenizer.decode([token_id])
        if tokenizer.encode(word, add_special_tokens=False).ids == [token_id]:
            ids[word] = token_id
        if len(ids) == GENERATION_WORD_LIMIT:
            break
    words = list(ids)
    rng = random.Random(VERIFY_SEED)
    while (failing := _first_failing_word(tokenizer, words, ids, rng)) is not None:
        words.remove(failing)
    return [(word, ids[word]) for word in words]


def tokenizer_config() -> dict[str, object]:
    """tokenizer_config.json: special tokens, no automatic BOS/EOS, the chat template."""
    return {
        # PreTrainedTokenizerFast loads tokenizer.json as is (transformers 4 and 5).
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": tokens.BOS_TOKEN,
        "eos_token": tokens.EOT_TOKEN,
        "pad_token": tokens.PAD_TOKEN,
        # Exact round trips: decode must not remove spaces before punctuation.
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "chat_template": tokens.CHAT_TEMPLATE,
    }


def _tokenizer_json_bytes(tokenizer: Tokenizer) -> bytes:
    """tokenizer.json, compact, with merges in the "left right" form every tokenizers reads.

    tokenizers >= 0.20 writes merges as pairs, which 0.19 (the one transformers 4.44 uses)
    cannot parse; the string form is unambiguous because byte-level symbols never contain a
    space (a space is the symbol "Ġ"). Compact because the pretty form is 2.5x larger and the
    file is never edited by hand.
    """
    data = json.loads(tokenizer.to_str())
    merges = data["model"]["merges"]
    if any(" " in symbol for pair in merges for symbol in pair):
        raise BuildError("a merge symbol contains a space; the string form would be ambiguous")
    data["model"]["merges"] = [" ".join(pair) for pair in merges]
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def build(output_dir: Path) -> BuildResult:
    """Train and write the tokenizer directory; overwrites the three files it owns."""
    corpus = training_corpus()
    tokenizer = train_tokenizer(corpus)
    words = select_generation_words(tokenizer, corpus)
    digest = corpus_sha256(corpus)
    # Reported so a rebuild shows whether SONNET_WEIGHT still gives realistic prompt lengths.
    line_counts = [
        len(tokenizer.encode(line, add_special_tokens=False)) for line in sonnet_lines()
    ]
    sim_vocab = {
        "format": tokens.SIM_VOCAB_FORMAT,
        "corpus_sha256": digest,
        "generation_words": [word for word, _ in words],
        "generation_token_ids": [token_id for _, token_id in words],
    }
    contents = {
        tokens.TOKENIZER_FILE: _tokenizer_json_bytes(tokenizer),
        tokens.TOKENIZER_CONFIG_FILE: _json_bytes(tokenizer_config()),
        tokens.SIM_VOCAB_FILE: _json_bytes(sim_vocab),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in contents.items():
        path = output_dir / name
        path.write_bytes(data)
        files.append(path)
    return BuildResult(
        output_dir=output_dir,
        files=tuple(files),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        generation_words=len(words),
        corpus_sha256=digest,
        sonnet_tokens_per_line=sum(line_counts) / len(line_counts),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints what was written."""
    parser = argparse.ArgumentParser(description="Build the simulator's tokenizer directory.")
    parser.add_argument(
        "output_dir",
        nargs="?",
        type=Path,
        default=tokens.DEFAULT_TOKENIZER_DIR,
        help="directory to write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    result = build(args.output_dir)
    for path in result.files:
        print(f"{path}  {path.stat().st_size} bytes")
    print(
        f"vocab {result.vocab_size}, {result.generation_words} generation words, "
        f"sonnet {result.sonnet_tokens_per_line:.2f} tokens per line, "
        f"corpus sha256 {result.corpus_sha256}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
