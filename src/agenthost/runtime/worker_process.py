"""One process of an `agenthost serve --workers N` group, as its supervisor starts it
(`python -m agenthost.runtime.worker_process`): its settings and slot come in the
environment, its listening socket and lifeline as inherited file descriptors."""

from __future__ import annotations

import os

import msgspec

from agenthost.runtime.server import run
from agenthost.runtime.supervisor import WORKER_ENV, WorkerSpec

__all__ = ["main"]


def main() -> None:
    spec = msgspec.json.decode(os.environ.pop(WORKER_ENV), type=WorkerSpec)
    run(spec.settings, worker=spec.slot)


if __name__ == "__main__":
    main()
