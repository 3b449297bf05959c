"""``python -m worker.sim [serve|predict] ...``: the simulated engine's entry point.

Without a subcommand the arguments are taken as ``serve`` arguments, so
``python -m worker.sim --engine vllm --model X`` starts a server.
"""

import sys

from worker.sim.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] not in ("serve", "predict", "-h", "--help"):
        args = ["serve", *args]
    sys.exit(main(args))
