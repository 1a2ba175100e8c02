"""The metrics of several server processes as one Prometheus exposition: every series of each
process gets a `process` label, and the series of one family stay together under one HELP and
TYPE header (the text format requires it). Sums are left to the query (`sum without
(process)`), where counters, gauges and histogram buckets all add up correctly."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["merge_process_exports"]


def merge_process_exports(exports: Iterable[tuple[str, bytes]]) -> bytes:
    """One exposition from `(process, text)` pairs, each a whole `Metrics.render()`."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for process, text in exports:
        label = f'process="{process}"'
        family = ""
        for line in text.decode().splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    lines = headers.setdefault(family, [])
                    if line not in lines:
                        lines.append(line)
                    samples.setdefault(family, [])
                continue
            samples.setdefault(family, []).append(_with_label(line, label))
    out: list[str] = []
    for family, lines in samples.items():
        out += headers.get(family, [])
        out += lines
    return ("\n".join(out) + "\n").encode()


def _with_label(sample: str, label: str) -> str:
    """`name{a="b"} 1` -> `name{process="0",a="b"} 1`; `name 1` -> `name{process="0"} 1`."""
    brace = sample.find("{")
    space = sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = sample[brace + 1 :]
        return f"{sample[:brace]}{{{label}{'' if rest.startswith('}') else ','}{rest}"
    return f"{sample[:space]}{{{label}}}{sample[space:]}"
