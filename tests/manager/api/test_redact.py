"""Redaction: secret-looking keys, flags, URL passwords and token-shaped text are masked;
engine knobs that merely contain "token" are not."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from manager.api.redact import MASK, is_secret_key, redact_argv, redact_text, redact_value


def test_secret_keys_and_knobs_are_told_apart() -> None:
    for key in ("api-key", "--api-key", "hf_token", "HF_TOKEN", "password", "db.passwd",
                "aws_secret_access_key", "Authorization"):
        assert is_secret_key(key), key
    for key in ("max-num-batched-tokens", "tokenizer", "max_tokens", "tp-size",
                "mean_output_tokens", "chunked-prefill-size"):
        assert not is_secret_key(key), key


def test_argv_masks_secret_flag_values_in_both_spellings() -> None:
    argv = ["vllm", "serve", "m", "--api-key", "s3cret", "--hf-token=s3cret",
            "--max-num-batched-tokens", "8192", "--db", "postgresql://u:pw@h/d"]
    assert redact_argv(argv) == ["vllm", "serve", "m", "--api-key", MASK,
                                 f"--hf-token={MASK}", "--max-num-batched-tokens", "8192",
                                 "--db", f"postgresql://u:{MASK}@h/d"]


def test_nested_config_values_are_masked_and_the_rest_kept() -> None:
    config = {"fixed_flags": {"api-key": "x", "max-num-seqs": 64},
              "launcher": {"env": {"MY_TOKEN": "y", "A": "b"}, "pass_env": ["HF_TOKEN"]},
              "storage": {"database_url": "postgresql+psycopg://me:pw@db:5432/st"}}
    assert redact_value(config) == {
        "fixed_flags": {"api-key": MASK, "max-num-seqs": 64},
        "launcher": {"env": {"MY_TOKEN": MASK, "A": "b"}, "pass_env": ["HF_TOKEN"]},
        "storage": {"database_url": f"postgresql+psycopg://me:{MASK}@db:5432/st"}}


@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30),
       body=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=20,
                    max_size=40))
def test_token_shaped_strings_never_survive_in_text(prefix: str, suffix: str,
                                                    body: str) -> None:
    assume(body not in f"{prefix} {suffix}")
    for secret in (f"hf_{body}", f"sk-{body}"):
        assert secret not in redact_text(f"{prefix} {secret} {suffix}")
    assert body not in redact_text(f"{prefix} Authorization: Bearer {body} {suffix}")
