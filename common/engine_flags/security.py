"""Engine flags that change trust or security: never searched, only set on purpose.

A search space explores performance; nothing in it may make a trial run code it would not
otherwise run, accept credentials, bind or reach other addresses, read or write files on the
requests' behalf, or relax a safety check. The flags below do one of those. A study that means
one sets it in ``fixed_flags``, where it is the same in every trial and visible in review;
``check_study_flags`` refuses it in ``search_space``. Credentials (``CREDENTIAL_FLAGS``) are
refused in ``fixed_flags`` too: a study is stored with its results, and secrets come from the
environment (``launcher.pass_env``), never from the study file.

The list is by canonical name (vLLM and SGLang spell most of these alike) and was reviewed
against every flag of the checked-in registries: the test suite fails when a registry gains a
flag whose name looks sensitive (``SENSITIVE_WORDS``) and that is neither listed here nor in
``REVIEWED_NOT_SECURITY``, so a refresh for a new release forces a look at its new flags.
"""

from __future__ import annotations

_CODE = "runs code that is not the engine's own (it imports or loads what the value names)"
_REMOTE_CODE = "runs Python code shipped with the model repository"
_REQUEST_TRUST = "lets requests supply what the server would otherwise decide"
_CREDENTIAL = "is a credential"
_NETWORK = "binds or connects to another address or port"
_CORS = "changes which browser origins may call the server (CORS)"
_TLS = "changes the server's TLS setup"
_FILES_READ = "lets requests read local files"
_FILES_WRITE = "writes files outside the trial's own directory"
_FETCH = "lets the server fetch URLs on the requests' behalf"
_EGRESS = "sends data to an outside endpoint"
_CONFIG_FILE = "reads further flags from a file, past this check"
_UNSAFE_INPUT = "accepts tensors from requests (a malformed one can crash the engine)"
_DEBUG = "turns on a debugging or administration surface"

SECURITY_FLAGS: dict[str, str] = {
    # Code that is not the engine's
    "trust-remote-code": _REMOTE_CODE,
    "middleware": _CODE,
    "tool-parser-plugin": _CODE,
    "reasoning-parser-plugin": _CODE,
    "io-processor-plugin": _CODE,
    "logits-processors": _CODE,
    "worker-cls": _CODE,
    "worker-extension-cls": _CODE,
    "scheduler-cls": _CODE,
    "model-class-overrides": _CODE,
    "logging-config": _CODE,
    "log-config-file": _CODE,
    "enable-custom-logit-processor": _CODE,
    "custom-weight-loader": _CODE,
    "tool-server": _CODE,
    "forward-hooks": _CODE,
    "sidecar": _CODE,
    "sidecar-args": _CODE,
    # Requests deciding for the server
    "trust-request-chat-template": _REQUEST_TRUST,
    "trust-request-mm-kwargs": _REQUEST_TRUST,
    "trust-mm-content-hashes": _REQUEST_TRUST,
    "enable-prompt-embeds": _UNSAFE_INPUT,
    # Credentials
    "api-key": _CREDENTIAL,
    "admin-api-key": _CREDENTIAL,
    "hf-token": _CREDENTIAL,
    "ssl-keyfile-password": _CREDENTIAL,
    # Addresses and ports
    "host": _NETWORK,
    "port": _NETWORK,
    "uds": _NETWORK,
    "grpc-port": _NETWORK,
    "master-addr": _NETWORK,
    "master-port": _NETWORK,
    "data-parallel-address": _NETWORK,
    "data-parallel-rpc-port": _NETWORK,
    "data-parallel-supervisor-port": _NETWORK,
    "dist-init-addr": _NETWORK,
    "nccl-port": _NETWORK,
    "kv-events-config": _NETWORK,
    "disaggregation-bootstrap-port": _NETWORK,
    "encoder-bootstrap-port": _NETWORK,
    "engine-info-bootstrap-port": _NETWORK,
    "gated-launch-port": _NETWORK,
    "smg-http-sidecar-port": _NETWORK,
    "decoupled-spec-bind-endpoint": _NETWORK,
    "decoupled-spec-connect-endpoints": _NETWORK,
    "load-publish-endpoint": _NETWORK,
    "encoder-urls": _NETWORK,
    "encoder-register-urls": _NETWORK,
    "remote-instance-weight-loader-seed-instance-ip": _NETWORK,
    "remote-instance-weight-loader-seed-instance-service-port": _NETWORK,
    "remote-instance-weight-loader-send-weights-group-ports": _NETWORK,
    "weight-cache-socket": _NETWORK,
    # CORS and TLS
    "allow-credentials": _CORS,
    "allowed-origins": _CORS,
    "allowed-methods": _CORS,
    "allowed-headers": _CORS,
    "ssl-keyfile": _TLS,
    "ssl-certfile": _TLS,
    "ssl-ca-certs": _TLS,
    "ssl-cert-reqs": _TLS,
    "ssl-ciphers": _TLS,
    "enable-ssl-refresh": _TLS,
    # Files and URLs
    "allowed-local-media-path": _FILES_READ,
    "allowed-media-domains": _FETCH,
    "download-dir": _FILES_WRITE,
    "mm-encoder-fp8-scale-save-path": _FILES_WRITE,
    "profiler-config": _FILES_WRITE,
    "crash-dump-folder": _FILES_WRITE,
    "debug-tensor-dump-output-folder": _FILES_WRITE,
    "debug-tensor-dump-input-file": _DEBUG,
    "msprobe-dump-config": _DEBUG,
    "file-storage-path": _FILES_WRITE,
    "export-metrics-to-file-dir": _FILES_WRITE,
    "modelopt-checkpoint-save-path": _FILES_WRITE,
    "modelopt-export-path": _FILES_WRITE,
    "spec-trace-dir": _FILES_WRITE,
    "log-requests-target": _FILES_WRITE,
    "delete-ckpt-after-loading": "deletes the model's checkpoint files after loading them",
    "otlp-traces-endpoint": _EGRESS,
    "config": _CONFIG_FILE,
}

# Words in a flag's name that suggest it may belong above (checked by the tests on refresh).
SENSITIVE_WORDS = frozenset({
    "trust", "token", "key", "ssl", "secret", "password", "auth", "credentials", "allowed",
    "allow", "host", "addr", "address", "port", "endpoint", "plugin", "cls", "middleware",
    "download", "url", "uds", "origins", "headers", "keyfile", "certfile", "certs", "remote",
    "unsafe", "insecure", "dump", "admin",
})

# Flags whose names contain a sensitive word and that were reviewed and found harmless to
# search (they tune performance or formatting; they grant no access).
REVIEWED_NOT_SECURITY: dict[str, str] = {
    "allow-deprecated-quantization": "selects quantization methods, grants no access",
    "data-parallel-multi-port-external-lb": "load-balancing layout of the engine's own ports",
    "enable-request-id-headers": "adds a response header",
    "max-lora-cls-labels": "a LoRA size limit",
    "enable-tokenizer-info-endpoint": "serves the tokenizer's public configuration",
    "return-tokens-as-token-ids": "response formatting",
    "dbo-decode-token-threshold": "a batching threshold",
    "dbo-prefill-token-threshold": "a batching threshold",
    "long-prefill-token-threshold": "a scheduling threshold",
    "long-prefill-token-threshold-adaptive": "a scheduling threshold",
    "allow-auto-truncate": "truncates over-long prompts instead of rejecting them",
    "bucket-e2e-request-latency": "metrics histogram buckets",
    "bucket-inter-token-latency": "metrics histogram buckets",
    "bucket-time-to-first-token": "metrics histogram buckets",
    "debug-tensor-dump-layers": "which layers a (separately refused) dump covers",
    "disaggregation-decode-host-receive-threshold": "a memory threshold",
    "hicache-host-memory-fraction": "a host-memory cache size",
    "hicache-host-memory-mode": "a host-memory cache mode",
    "kt-max-deferred-experts-per-token": "an expert-offload limit",
    "media-url-max-file-size-mb": "a size limit on media downloads",
    "prefill-delayer-token-usage-low-watermark": "a scheduling threshold",
    "remote-instance-weight-loader-backend": "a backend name (its addresses are refused)",
    "remote-instance-weight-loader-start-seed-via-transfer-engine": "a loading mode",
    "speculative-token-map": "a file of the draft model (like the model itself)",
    "tbo-token-distribution-threshold": "a batching threshold",
    "tokenizer-metrics-allowed-custom-labels": "metrics labels",
    "tokenizer-metrics-custom-labels-header": "metrics labels",
}


# Credentials are refused everywhere in a study, fixed_flags included: the study is stored with
# its results, and secrets never enter the database (they come from the environment).
CREDENTIAL_FLAGS = frozenset(name for name, reason in SECURITY_FLAGS.items()
                             if reason == _CREDENTIAL)


def is_credential(name: str) -> bool:
    """Whether a flag (canonical name) carries a secret that a study file may not hold."""
    return name.lstrip("-").replace("_", "-") in CREDENTIAL_FLAGS


def security_reason(name: str) -> str | None:
    """Why a flag (canonical name, leading dashes optional) is a security flag, or None."""
    key = name.lstrip("-")
    return SECURITY_FLAGS.get(key) or SECURITY_FLAGS.get(key.replace("_", "-"))


def looks_sensitive(name: str) -> bool:
    """Whether a flag's name contains one of ``SENSITIVE_WORDS`` (a hint for review only)."""
    return bool(set(name.lstrip("-").replace("_", "-").split("-")) & SENSITIVE_WORDS)
