"""What a check found wrong: one message about one object of one overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Problem", "describe", "format_path"]


@dataclass(frozen=True)
class Problem:
    """`subject` names the object (`Deployment/agenthost`); `overlay` is set by the caller
    that rendered it."""

    subject: str
    message: str
    overlay: str = ""

    def __str__(self) -> str:
        where = f"{self.overlay}: " if self.overlay else ""
        return f"{where}{self.subject}: {self.message}"


def describe(obj: dict[str, Any]) -> str:
    """`Kind/name` of a rendered object, tolerant of broken ones."""
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{obj.get('kind', '?')}/{name or '?'}"


def format_path(parts: Any) -> str:
    """`["spec", "ports", 0, "port"]` -> `spec.ports[0].port`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(the object)"
