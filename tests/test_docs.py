"""docs/configuration.md is generated from the study schema and must never drift from it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from common.config import StudyConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gen_config_docs.py"
DOC = REPO / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """scripts/gen_config_docs.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(gen: ModuleType) -> str:
    return str(gen.render())


def test_configuration_doc_matches_schema(gen: ModuleType, rendered: str) -> None:
    """The generator in check mode: docs/configuration.md is exactly what common/config.py and
    examples/quickstart.yaml produce now (regenerate with `python scripts/gen_config_docs.py`)."""
    message = gen.drift(rendered, DOC)
    assert message is None, message


def test_check_mode_fails_on_a_stale_file(gen: ModuleType, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`--check` exits 1 and prints a diff when the file differs, and 0 when it matches."""
    stale = tmp_path / "configuration.md"
    stale.write_text(DOC.read_text().replace("Upper bound on trials", "Most trials"))
    assert gen.main(["--check", "--output", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "-Most trials" in err and "+Upper bound on trials" in err
    assert gen.main(["--output", str(stale)]) == 0
    assert gen.main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text() == DOC.read_text()


def test_every_field_is_in_the_reference(gen: ModuleType, rendered: str) -> None:
    """Each field of every section has a heading with its dotted path in the generated doc."""
    paths = [doc.path for doc in gen.walk(StudyConfig)]
    assert "benchmark.timeouts.startup_s" in paths and "search_space.<flag>.step" in paths
    for path in paths:
        assert f"# `{path}`\n" in rendered, path


def test_every_setting_has_a_docstring(gen: ModuleType) -> None:
    """Every field that holds a value (not a section) documents itself in common/config.py."""
    missing = [doc.path for doc in gen.walk(StudyConfig)
               if doc.section is None and not doc.description]
    assert missing == []
