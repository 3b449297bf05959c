"""Redaction of anything secret-looking before it leaves the API.

The stored config and argv should hold no secrets (DESIGN.md §3), but an engine flag such as
vLLM's ``--api-key`` or a database URL with a password can slip into a study file; the API
masks them anyway. A key is secret when one of its words (split on ``-``, ``_``, ``.``) is in
``SECRET_WORDS`` or it contains one of ``SECRET_PARTS``: ``hf_token`` and ``api-key`` are,
``max-num-batched-tokens`` and ``tokenizer`` are not.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MASK = "***"
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "pwd", "apikey",
                          "credential", "credentials", "auth", "authorization"})
SECRET_PARTS = ("api_key", "api-key", "apikey", "access_key", "private_key", "secret")
_WORD_SPLIT = re.compile(r"[-_.\s]+")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]+:)[^@/\s]+(?=@)")
_TEXT_SECRETS = [
    re.compile(r"\bhf_[A-Za-z0-9]{16,}\b"),  # Hugging Face tokens
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}\b"),  # OpenAI-style keys
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(?<=[\s\"'])(?:[a-z_-]*(?:api[_-]?key|token|password|secret))"
               r"(?P<sep>\s*[=:]\s*)\S+"),
]


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether ``key`` (a config key or an engine flag) names a secret. Cached: a page of
    trials asks about the same few param names and flags on every row."""
    lowered = key.lower().lstrip("-")
    if any(part in lowered for part in SECRET_PARTS):
        return True
    return any(word in SECRET_WORDS for word in _WORD_SPLIT.split(lowered))


def redact_value(value: Any) -> Any:
    """``value`` (JSON-like) with secret keys' values masked, recursively, and passwords in
    URLs masked in every string."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(str(k)) and v not in (None, "", [], {})
                    else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        if "://" not in value:  # the common case, and no URL can match without it
            return value
        return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret flags masked (``--api-key=X`` and ``--api-key X``)
    and passwords in URLs masked."""
    out: list[str] = []
    mask_next = False
    for item in argv:
        if mask_next and not item.startswith("--"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        if item.startswith("-") and "=" in item:
            flag, _, _ = item.partition("=")
            out.append(f"{flag}={MASK}" if is_secret_key(flag) else redact_value(item))
            continue
        if item.startswith("-") and is_secret_key(item):
            mask_next = True
        out.append(redact_value(item))
    return out


def redact_text(text: str) -> str:
    """Free text (a log excerpt, a message) with token-shaped substrings masked."""
    text = redact_value(text)
    for pattern in _TEXT_SECRETS:
        if "sep" in pattern.groupindex:
            text = pattern.sub(lambda m: m.group(0)[: m.start("sep") - m.start(0)]
                               + m.group("sep") + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text
