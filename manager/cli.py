"""The ``servetune`` command line (one entry point over the Python API).

Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import sys

USAGE = """usage: servetune <command> [args]

commands:
  sim serve|predict ...   the simulated serving engine (see `servetune sim --help`)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "sim":
        from worker.sim.cli import main as sim_main

        return sim_main(rest)
    print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
