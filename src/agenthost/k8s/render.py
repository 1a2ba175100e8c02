"""Overlays as Kubernetes objects: `kubectl kustomize <overlay>`, parsed.

An overlay is named by its directory under `<root>/overlays/` (`dev`, `production`) or given
as a path to any directory holding a kustomization.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["KUSTOMIZATION_FILES", "RenderError", "list_overlays", "render", "resolve_overlay"]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class RenderError(Exception):
    """The overlay could not be found or kustomize refused it."""


def _is_kustomization(directory: Path) -> bool:
    return any((directory / name).is_file() for name in KUSTOMIZATION_FILES)


def list_overlays(root: Path) -> list[str]:
    """Names of the overlays under `root/overlays`, sorted."""
    overlays = root / "overlays"
    if not overlays.is_dir():
        return []
    return sorted(p.name for p in overlays.iterdir() if p.is_dir() and _is_kustomization(p))


def resolve_overlay(root: Path, name: str) -> Path:
    """`name` as an overlay of `root`, else as a directory path."""
    for candidate in (root / "overlays" / name, Path(name)):
        if candidate.is_dir() and _is_kustomization(candidate):
            return candidate
    known = ", ".join(list_overlays(root)) or "none"
    raise RenderError(f"no overlay {name!r} in {root / 'overlays'} (overlays: {known})")


def render(directory: Path, kubectl: str | None = None) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` produces, in its order."""
    import yaml  # a dev dependency: only `agenthost k8s check` needs it

    binary = kubectl or shutil.which("kubectl")
    if binary is None:
        raise RenderError("kubectl is not installed (kubectl kustomize renders the overlays)")
    result = subprocess.run(
        [binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    objects: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(result.stdout):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise RenderError(f"kubectl kustomize {directory} produced a non-object: {doc!r}")
        objects.append(doc)
    return objects
