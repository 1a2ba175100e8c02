"""A server starts without importing rich: structlog is loaded with rich hidden (its console
tracebacks are then plain), found with rich when a command drew with it first, and loaded
with rich when it cannot do without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str, *, path: Path | None = None) -> str:
    """Run `code` in a new interpreter (`path` first on its import path); its output."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_server_and_its_command_import_neither_rich_nor_what_it_brings() -> None:
    loaded = run(
        """
        import sys
        import agenthost.cli, agenthost.runtime.server
        print(sorted(m for m in ("rich", "pygments", "attr") if m in sys.modules))
        """
    )
    assert loaded == "[]"


def test_with_rich_hidden_console_lines_show_a_plain_traceback() -> None:
    out = run(
        """
        import sys
        from agenthost.observability.structlog_loader import load_structlog
        structlog = load_structlog()
        assert "rich" not in sys.modules
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        try:
            raise ValueError("boom")
        except ValueError:
            line = renderer(None, "error", {"event": "failed", "exc_info": sys.exc_info()})
        print(line)
        """
    )
    assert "Traceback (most recent call last)" in out and "ValueError: boom" in out


def test_rich_loaded_first_is_what_structlog_finds() -> None:
    found = run(
        """
        import rich.console
        from agenthost.observability.structlog_loader import load_structlog
        structlog = load_structlog()
        print(structlog.dev.rich is not None)
        """
    )
    assert found == "True"


def test_a_structlog_that_needs_rich_is_loaded_with_it(tmp_path: Path) -> None:
    fake = tmp_path / "structlog"
    fake.mkdir()
    (fake / "__init__.py").write_text("import rich\nNEEDS_RICH = True\n")
    found = run(
        """
        import sys
        from agenthost.observability.structlog_loader import load_structlog
        structlog = load_structlog()
        print(structlog.NEEDS_RICH, sys.modules["rich"] is not None)
        """,
        path=tmp_path,
    )
    assert found == "True True"
