# A servetune worker: an inference engine's official image with servetune (and Ray) installed
# into the engine's own Python. It is the image of Ray worker nodes and KubeRay worker pods whose
# trials run the engine with the process launcher (launcher.kind: process, the default): the
# trial actor starts `vllm serve ...` / `python -m sglang.launch_server ...` / `trtllm-serve ...`
# as a child process on the GPUs Ray gave it (CUDA_VISIBLE_DEVICES), and runs genai-bench beside
# it. No Docker daemon is needed in the pod.
#
# Build, from the repository root, one image per engine (BuildKit sends only the COPY'd paths):
#   docker build -f deploy/worker.Dockerfile -t servetune-worker:vllm-v0.11.0 .
#   docker build -f deploy/worker.Dockerfile -t servetune-worker:sglang-v0.5.19 \
#       --build-arg ENGINE_IMAGE=lmsysorg/sglang:v0.5.19-cu129 --build-arg ENGINE_PACKAGE=sglang .
#   docker build -f deploy/worker.Dockerfile -t servetune-worker:trtllm-1.2.1 \
#       --build-arg ENGINE_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.1 \
#       --build-arg ENGINE_PACKAGE=tensorrt_llm .
#   (NVIDIA's TensorRT-LLM release images are on NGC, nvcr.io/nvidia/tensorrt-llm/release:<tag>;
#   pick the tag of the TensorRT-LLM release you tune.)
#
# Ray must be the same version on every node of the cluster, the head, the driver of
# `ray job submit` and these workers: 2.60.0, which pyproject.toml pins (RAY_VERSION checks it).
# Ray also requires the same Python minor version everywhere: these engine images ship
# Python 3.12 (check: docker run --rm --entrypoint python3 <image> --version), so run the head
# from a matching image, e.g. rayproject/ray:2.60.0-py312, or from this image without GPUs.
#
# Secrets are not baked in: give the pods HF_TOKEN from a Kubernetes Secret (env valueFrom
# secretKeyRef) and mount a shared Hugging Face cache at /root/.cache/huggingface.

ARG ENGINE_IMAGE=vllm/vllm-openai:v0.11.0
FROM ${ENGINE_IMAGE}

# The engine's distribution name, checked after servetune is installed (vllm, sglang,
# tensorrt_llm): installing servetune must not have removed or replaced it.
ARG ENGINE_PACKAGE=vllm
ARG RAY_VERSION=2.60.0

# KubeRay (1.1 and later) probes Ray pods with `wget`; engine images do not all have it.
RUN if ! command -v wget >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends wget \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# servetune into the engine's interpreter: the process launcher runs SGLang and the simulated
# engine as `<this python> -m ...`, so they must share one environment. pip upgrades what
# servetune pins (ray) and keeps what the engine has when it already satisfies servetune.
# PIP_BREAK_SYSTEM_PACKAGES: some engine images mark their system Python externally managed
# although everything in them is installed there.
# The checks run after the sources are gone, so they import what was installed.
COPY pyproject.toml README.md /opt/servetune/src/
COPY common /opt/servetune/src/common
COPY worker /opt/servetune/src/worker
COPY manager /opt/servetune/src/manager
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir /opt/servetune/src \
    && rm -rf /opt/servetune \
    && python3 -m pip show "${ENGINE_PACKAGE}" \
    && python3 -c "import ray, sys; sys.exit(None if ray.__version__ == '${RAY_VERSION}' else 'ray ' + ray.__version__ + ' is installed; the cluster runs ${RAY_VERSION}')" \
    && python3 -c "import common, manager, worker.trial" \
    && for tool in servetune genai-bench ray; do \
           command -v "$tool" >/dev/null || { echo "$tool is not on PATH" >&2; exit 1; }; \
       done \
    && (python3 -m pip check || echo "note: pip check reports conflicts above (often in the engine image as shipped)")

# vLLM's image has ENTRYPOINT ["vllm", "serve"]: clear it, so `ray start ...` (KubeRay, the Ray
# cluster launcher) and the engine commands servetune builds run as given.
ENTRYPOINT []
CMD ["/bin/bash"]
