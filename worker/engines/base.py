"""The engine seam: what runs for one deployment, how its flags are spelled, how its failures read.

An ``Engine`` is a stateless description of one inference engine (vLLM, SGLang, TensorRT-LLM or
the simulated engine). It builds the engine's argv, the environment that pins it to its GPUs,
and reads the tail of a failed engine's log into a ``FailureReason``. It never starts anything:
launchers (``worker.launchers``) do that.

Failure classification is rule-based: an ordered list of ``FailureRule`` regexes is matched
against the log tail, most specific class first:

1. ``infra_error``: our setup is wrong, not the config (the engine sees a GPU count other than
   the one its parallelism needs, no GPU driver, the port was taken, the engine is not
   installed). The platform retries these.
2. ``infeasible_config``: deterministic for this config (out of GPU memory at startup, no room
   for the KV cache, a flag value or combination the engine rejects). The searcher learns from
   these; retrying cannot help.
3. ``engine_crash``: anything else.

Infrastructure rules come first because a wrong setup often causes secondary errors that look
like config errors further down the log (a missing GPU surfaces as an allocation failure too).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from common.errors import ConfigError
from common.results import FailureReason

# The longest summary kept: one line in a table of trials, not a log.
SUMMARY_MAX_CHARS = 300

# Flags the launcher owns: it allocates the port and probes the served name, so an engine's
# searched flags must not override them.
LAUNCHER_OWNED_FLAGS = ("--host", "--port", "--served-model-name", "--served_model_name")


@runtime_checkable
class Engine(Protocol):
    """One inference engine: its command line, GPU pinning and failure reading.

    Implementations are immutable and safe to share between threads and trials.
    """

    @property
    def name(self) -> str:
        """Registry name (``vllm``, ``sglang``, ``trtllm``, ``sim``)."""
        ...

    @property
    def health_path(self) -> str:
        """HTTP path that answers 200 once the engine serves (``/health``)."""
        ...

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        """The full argv that starts the engine serving ``model`` on ``host:port``.

        ``flags`` are the engine's native flags, each value its own list item (or
        ``--flag=value``); they are appended verbatim after the launcher-owned options, never
        joined into a shell string. Raises ``ConfigError`` if ``flags`` set a launcher-owned
        option (host, port, served model name).
        """
        ...

    def gpu_env(self, gpu_ids: Sequence[str]) -> dict[str, str]:
        """Environment variables that make exactly ``gpu_ids`` (host GPU ids) visible."""
        ...

    def classify_failure(self, exit_code: int | None,
                         log_tail: str) -> tuple[FailureReason, str]:
        """Why the engine failed, from its exit status and the tail of its log.

        ``exit_code`` is the process exit status (negative: killed by that signal; ``None``:
        unknown or still running). Returns the reason class and a one-line summary, usually
        the engine's own error line.
        """
        ...


@dataclass(frozen=True)
class FailureRule:
    """A log pattern and the failure class it means. ``pattern`` is searched line by line."""

    pattern: re.Pattern[str]
    reason: FailureReason


def rule(regex: str, reason: FailureReason) -> FailureRule:
    """A case-insensitive ``FailureRule`` (engines vary the case of the same message)."""
    return FailureRule(re.compile(regex, re.IGNORECASE), reason)


_INFRA = FailureReason.INFRA_ERROR
_INFEASIBLE = FailureReason.INFEASIBLE_CONFIG

# Messages every engine can print, because all of them run on PyTorch/CUDA under Python.
COMMON_INFRA_RULES: tuple[FailureRule, ...] = (
    # The GPUs given do not match the parallelism: vLLM with Ray ("... in the placement group"
    # / "... in the cluster"), vLLM's multiprocessing executor, TensorRT-LLM's LLM API and C++
    # runtime, and the simulator.
    rule(r"exceeds the total number of available GPUs", _INFRA),
    rule(r"than max local gpu count", _INFRA),
    rule(r"Only \d+ GPUs are available, but \d+ are required", _INFRA),
    rule(r"Number of GPUs per node \d+ must be at least as large as TP", _INFRA),
    rule(r"Give the engine exactly the GPUs", _INFRA),
    # A rank asked for a device index beyond CUDA_VISIBLE_DEVICES (SGLang with tp > GPUs).
    rule(r"invalid device ordinal", _INFRA),
    # No usable GPU or driver at all: the node or the container runtime is misconfigured.
    rule(r"No CUDA GPUs are available", _INFRA),
    rule(r"could not select device driver", _INFRA),
    rule(r"CUDA driver version is insufficient", _INFRA),
    rule(r"Found no NVIDIA driver", _INFRA),
    # The allocated port was taken between allocation and bind (the process launcher retries).
    rule(r"address already in use", _INFRA),
    # The engine is not installed where the trial runs.
    rule(r"No module named '?(vllm|sglang|tensorrt_llm)\b", _INFRA),
)

COMMON_INFEASIBLE_RULES: tuple[FailureRule, ...] = (
    # PyTorch's allocator (torch.OutOfMemoryError / torch.cuda.OutOfMemoryError) and raw CUDA
    # errors ("CUDA error: out of memory", TensorRT-LLM's "CUDA runtime error in
    # ::cudaMallocAsync(...): out of memory").
    rule(r"OutOfMemoryError", _INFEASIBLE),
    rule(r"CUDA out of memory", _INFEASIBLE),
    rule(r"CUDA (runtime )?error\b.*\bout of memory", _INFEASIBLE),
    # argparse usage errors (vLLM, SGLang, the simulator): exit status 2.
    rule(r"\berror: argument \S+", _INFEASIBLE),
    rule(r"\berror: unrecognized arguments:", _INFEASIBLE),
    rule(r"\berror: the following arguments are required:", _INFEASIBLE),
    # pydantic validation of the engine's config classes (vLLM >= 0.10, TensorRT-LLM LlmArgs).
    rule(r"\b\d+ validation errors? for \w+", _INFEASIBLE),
)


def classify_log(exit_code: int | None, log_tail: str,
                 rules: Iterable[FailureRule]) -> tuple[FailureReason, str]:
    """Apply ``rules`` in order to ``log_tail``; the first rule that matches any line wins.

    The summary is the matching line from its exception name on (log prefixes dropped), cut to
    ``SUMMARY_MAX_CHARS``. Without a match the reason is ``engine_crash`` and the summary is
    the last error-looking line, or a sentence about the exit status.
    """
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for failure_rule in rules:
        for line in lines:
            match = failure_rule.pattern.search(line)
            if match:
                return failure_rule.reason, _summary_line(line, match.start())
    return FailureReason.ENGINE_CRASH, _crash_summary(exit_code, lines)


def check_flags(engine: str, flags: Sequence[str]) -> None:
    """Raise ``ConfigError`` if ``flags`` set an option the launcher owns."""
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name in LAUNCHER_OWNED_FLAGS:
            raise ConfigError(
                f"{engine}: flag {name} is set by servetune (it allocates the port and serves "
                f"the model under the trial's name); remove it from the engine flags",
                path="engine.flags", value=flag)


class RuleClassifiedEngine:
    """What the engines share: ``/health``, GPU pinning by ``CUDA_VISIBLE_DEVICES`` and failure
    classification by ``failure_rules()`` (the class's ``rules`` unless overridden).
    Subclasses set ``name`` and ``rules`` and write ``command``."""

    health_path: ClassVar[str] = "/health"
    rules: ClassVar[tuple[FailureRule, ...]] = ()

    def gpu_env(self, gpu_ids: Sequence[str]) -> dict[str, str]:
        return cuda_visible_devices(gpu_ids)

    def failure_rules(self) -> tuple[FailureRule, ...]:
        return self.rules

    def classify_failure(self, exit_code: int | None,
                         log_tail: str) -> tuple[FailureReason, str]:
        return classify_log(exit_code, log_tail, self.failure_rules())


def cuda_visible_devices(gpu_ids: Sequence[str]) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` listing ``gpu_ids`` in order (empty: no GPU visible)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(gpu) for gpu in gpu_ids)}


# An exception name starting a message: "torch.OutOfMemoryError:", "ValueError:", "Exception:".
_EXCEPTION_START = re.compile(r"\b[A-Za-z_][\w.]*(Error|Exception|Exit)\b:")
_ERROR_LINE = re.compile(r"\b[A-Za-z_][\w.]*(Error|Exception)\b:|\bERROR\b|\berror:", re.I)


def _summary_line(line: str, match_at: int) -> str:
    # Drop the log prefix ("ERROR 11-23 18:08:54 [engine.py:123] ") when the error line names
    # its exception before the match; otherwise keep the line as it is.
    exception = None
    for candidate in _EXCEPTION_START.finditer(line):
        if candidate.start() <= match_at:
            exception = candidate
    text = line[exception.start():] if exception else line
    return _clip(text)


def _crash_summary(exit_code: int | None, lines: list[str]) -> str:
    status = _exit_status(exit_code)
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return _clip(f"{status}: {_summary_line(line, len(line))}")
    if lines:
        return _clip(f"{status}; last log line: {lines[-1]}")
    return f"{status} without any log output"


def _exit_status(exit_code: int | None) -> str:
    if exit_code is None:
        return "engine failed"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        # SIGKILL that servetune did not send is most often the host's OOM killer.
        hint = " (host out of memory?)" if name == "SIGKILL" else ""
        return f"engine killed by {name}{hint}"
    return f"engine exited with code {exit_code}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= SUMMARY_MAX_CHARS:
        return text
    return text[:SUMMARY_MAX_CHARS - 1] + "…"
