"""Traffic scenarios in genai-bench's notation, parsed and sampled.

Supported (text-to-text): ``D(in,out)`` deterministic; ``N(mean_in,std_in)/(mean_out,std_out)``
normal (input ≥ 1, output ≥ 2 tokens after truncation, as genai-bench samples them);
``U(max_in,max_out)`` or ``U(min_in,max_in)/(min_out,max_out)`` uniform. The same string is
passed to genai-bench's ``--traffic-scenario`` and to the simulator's virtual-time predictor.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_NUMBER_PAIR = r"\((\d+),(\d+)\)"
_PATTERNS = {
    "D": re.compile(rf"^D{_NUMBER_PAIR}$"),
    "N": re.compile(rf"^N{_NUMBER_PAIR}/{_NUMBER_PAIR}$"),
    "U": re.compile(rf"^U{_NUMBER_PAIR}(?:/{_NUMBER_PAIR})?$"),
}
FORMS = "D(in,out), N(mean_in,std_in)/(mean_out,std_out), U(max_in,max_out) or " \
        "U(min_in,max_in)/(min_out,max_out)"


class TrafficError(ValueError):
    """A traffic scenario string that genai-bench would not accept."""


@dataclass(frozen=True)
class TrafficScenario:
    """A distribution of (input tokens, output tokens) per request."""

    kind: str
    input_a: int
    input_b: int
    output_a: int
    output_b: int
    text: str

    @classmethod
    def parse(cls, text: str) -> TrafficScenario:
        compact = text.replace(" ", "")
        kind = compact[:1]
        pattern = _PATTERNS.get(kind)
        match = pattern.match(compact) if pattern else None
        if match is None:
            raise TrafficError(f"traffic scenario {text!r} is not one of: {FORMS}")
        groups = [int(g) for g in match.groups() if g is not None]
        if kind == "D":
            return cls("D", groups[0], groups[0], groups[1], groups[1], compact)
        if kind == "N":
            return cls("N", groups[0], groups[1], groups[2], groups[3], compact)
        if len(groups) == 2:
            return cls("U", 1, groups[0], 1, groups[1], compact)
        if groups[0] > groups[1] or groups[2] > groups[3]:
            raise TrafficError(f"traffic scenario {text!r}: a minimum exceeds its maximum")
        return cls("U", groups[0], groups[1], groups[2], groups[3], compact)

    def sample(self, rng: random.Random) -> tuple[int, int]:
        """One request's (input tokens, output tokens)."""
        if self.kind == "D":
            return self.input_a, self.output_a
        if self.kind == "N":
            return (max(1, int(rng.gauss(self.input_a, self.input_b))),
                    max(2, int(rng.gauss(self.output_a, self.output_b))))
        return (max(1, int(rng.uniform(self.input_a, self.input_b))),
                max(2, int(rng.uniform(self.output_a, self.output_b))))

    @property
    def max_input_tokens(self) -> int:
        return self.input_a + 4 * self.input_b if self.kind == "N" else self.input_b

    @property
    def max_output_tokens(self) -> int:
        return self.output_a + 4 * self.output_b if self.kind == "N" else self.output_b

    def __str__(self) -> str:
        return self.text
