"""What the code and the docs cite exists: a file path (`src/agenthost/turns/engine.py`,
`docs/design.md`, `benchmarks/turn_cpu.py`, ...) names a file of the repository, and a
dotted name in backticks (`agenthost.web.routes`, `agenthost.turns.service.TurnService`)
names a module of the package and, after it, attributes that module has."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PATH = re.compile(
    r"(?<![\w/.-])((?:src/)?agenthost/[\w/]+\.(?:py|lua)|(?:docs|benchmarks|tests|scripts|deploy)"
    r"/[\w/.-]+\.(?:py|md|sh|json|yaml))\b"
)
DOTTED = re.compile(r"`(agenthost(?:\.\w+)+)`")

# Dotted names that are not Python names: span attributes (docs/observability.md).
SPAN_ATTRIBUTES = {
    "agenthost.session_id",
    "agenthost.turn_id",
    "agenthost.tenant",
    "agenthost.outcome",
    "agenthost.request_id",
    "agenthost.cancelled",
    "agenthost.llm.stream",
}


def tracked(*suffixes: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in out if f.endswith(suffixes) and (ROOT / f).is_file()]


SOURCES = tracked(".py", ".md")


def cited_paths(text: str) -> set[str]:
    return {m.group(1) for m in PATH.finditer(text)}


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_files_exist(source: Path) -> None:
    text = source.read_text()
    missing = []
    for cited in cited_paths(text):
        if "*" in cited or "<" in cited:
            continue
        where = ROOT / cited if not cited.startswith("agenthost/") else ROOT / "src" / cited
        if not where.exists():
            missing.append(cited)
    assert missing == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dotted_names_resolve(source: Path) -> None:
    text = source.read_text()
    names = set(DOTTED.findall(text)) - SPAN_ATTRIBUTES
    missing = sorted(name for name in names if not resolves(name))
    assert missing == []


def test_the_checks_catch_a_stale_reference() -> None:
    gone = "src/agenthost/" + "app.py"  # spelt in two parts, or this file would cite it
    assert cited_paths(f"see `{gone}` and docs/design.md") == {gone, "docs/design.md"}
    assert not (ROOT / gone).exists()
    assert resolves("agenthost.turns.service.TurnService")
    assert not resolves("agenthost.hot_routes")
    assert not resolves("agenthost.turns.service.start_streamed_turn")
