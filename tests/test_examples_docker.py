"""The docker examples (real engines in their official images on GPU hosts) stay runnable as
written: nothing here starts an engine; the files are read, not run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import LauncherSection, load_study

REPO = Path(__file__).resolve().parents[1]
DOCKER_EXAMPLES = ["examples/sglang-llama8b-docker.yaml", "examples/vllm-llama70b-docker.yaml"]


def _read(relative: str) -> tuple[str, dict[str, Any]]:
    text = (REPO / relative).read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{relative}: not a mapping of sections"
    return text, data


@pytest.mark.parametrize("relative", DOCKER_EXAMPLES)
def test_docker_example_names_docker_launcher_and_image(relative: str) -> None:
    """Each docker example is valid YAML whose launcher is `kind: docker` with an image."""
    _, data = _read(relative)
    launcher = data.get("launcher")
    assert isinstance(launcher, dict), f"{relative}: no launcher section"
    assert launcher.get("kind") == "docker"
    image = launcher.get("image")
    assert isinstance(image, str) and ":" in image and not image.endswith(":latest"), (
        f"{relative}: the image must be pinned to a tag, got {image!r}")


@pytest.mark.parametrize("relative", DOCKER_EXAMPLES)
def test_docker_example_header_commands_name_this_study(relative: str) -> None:
    """The commands in the header comment run this very file and clean this study."""
    text, data = _read(relative)
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for command in (f"servetune validate {relative}", f"servetune run {relative}",
                    f"ray job submit --working-dir . -- servetune run {relative} --address auto",
                    f"servetune clean --study {data['name']}"):
        assert command in header, f"{relative}: header lacks `{command}`"


@pytest.mark.parametrize("relative", DOCKER_EXAMPLES)
def test_docker_example_loads_as_a_study(relative: str) -> None:
    """With the docker launcher fields in the schema, each example loads as a study."""
    if "pull" not in LauncherSection.model_fields:
        pytest.skip("common.config.LauncherSection has no docker fields (pull, gpu_mode, ...) "
                    "yet; the examples are written against them")
    study = load_study(REPO / relative)
    assert study.launcher.kind == "docker" and study.launcher.image
    assert study.name == Path(relative).stem
