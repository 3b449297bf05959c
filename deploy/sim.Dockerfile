# servetune's simulated serving engine (worker/sim) as a self-contained image, for GPU-less
# clusters and for CI on machines that can pull from Docker Hub and PyPI. It serves the
# OpenAI-compatible API with vLLM's or SGLang's own flags; timings come from the simulator's
# performance model (docs/simulator.md), not from a GPU.
#
# Build, from the repository root (BuildKit sends only the paths COPY'd below):
#   docker build -f deploy/sim.Dockerfile -t servetune-sim:0.1.0 .
#
# Run by hand (the default command serves Llama-3.1-8B in the vLLM dialect on port 8000):
#   docker run --rm --init -p 127.0.0.1:8000:8000 servetune-sim:0.1.0
#   docker run --rm --init -p 127.0.0.1:8000:8000 servetune-sim:0.1.0 --engine sglang \
#       --model-path meta-llama/Llama-3.1-70B-Instruct --tp-size 4 --host 0.0.0.0 --port 8000 \
#       --sim-gpu H100
#
# In a study (engine.simulated: true), under the docker launcher:
#   launcher:
#     kind: docker
#     image: servetune-sim:0.1.0
#     pull: never               # or if_missing, after pushing it to your registry
#     gpu_mode: nvidia_env      # the sim counts its GPUs from NVIDIA_VISIBLE_DEVICES
#     hf_cache: null            # the sim ships its tokenizer; it reads no weights
#     command: [python, -m, worker.sim, serve]   # this image's interpreter, not the host's
#
# Machines without a registry (this project's test machine, sandboxed CI): the tests never
# build this file. `servetune sim image` (worker/sim/image.py) makes an equivalent image there
# with `docker import` of an empty tar and runs it with the host's /usr, /lib, /lib64, /bin,
# /etc, Python and the project's virtualenv mounted read-only: the same `python -m worker.sim
# serve` and flags, nothing downloaded. This file is the self-contained form of that image.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project exactly as pyproject.toml packages it: the three import packages (manager,
# worker, common) with their package data (the simulator's tokenizer, the migrations).
# README.md is the project's readme in pyproject.toml, so the build needs it.
# The check runs after the sources are gone, so it imports what was installed.
COPY pyproject.toml README.md /opt/servetune/src/
COPY common /opt/servetune/src/common
COPY worker /opt/servetune/src/worker
COPY manager /opt/servetune/src/manager
RUN python -m pip install /opt/servetune/src \
    && rm -rf /opt/servetune \
    && python -c "import common, manager, worker.sim.cli" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin servetune

USER servetune
WORKDIR /home/servetune

# The engine port inside the container (launcher.container_port); servetune publishes it on
# 127.0.0.1 at a free host port and passes --host 0.0.0.0 --port 8000 itself.
EXPOSE 8000

# /health answers 503 while the simulated engine "loads" and 200 once it serves; --start-period
# covers the simulated model load. Assumes the default container port, 8000.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

# servetune's docker launcher starts containers with --init (docker-init as PID 1 forwards
# SIGTERM); add --init to a `docker run` by hand for the same prompt `docker stop`.
ENTRYPOINT ["python", "-m", "worker.sim", "serve"]
CMD ["--engine", "vllm", "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0", "--port", "8000"]
