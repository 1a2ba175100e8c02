"""redis-py, imported as it is where OpenTelemetry is not installed, unless OpenTelemetry is
loaded already.

As it is imported, redis-py tries to import OpenTelemetry's metrics SDK for metrics of its
own, and the SDK brings psutil: where OpenTelemetry is installed (`agenthost[otel]`), that
roughly doubles redis-py's import, about 65 ms of CPU at every start of a process on Redis,
for metrics redis-py records only when an application turns them on, which agenthost never
does. So redis-py is imported with OpenTelemetry hidden, and finds it missing, as in an
install without it. A process that has loaded OpenTelemetry already (`--otel`, or an agent
that uses it) imports redis-py as it is. Every Redis-backed part calls `load_redis_py` before
it imports the module that uses redis-py.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["load_redis_py"]


def load_redis_py() -> None:
    """Import redis-py (with its asyncio client) if not imported yet, OpenTelemetry hidden
    unless loaded; imported again as it is if that fails (a redis-py that needs it)."""
    if "redis" in sys.modules or "opentelemetry" in sys.modules:
        importlib.import_module("redis")
        return
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        importlib.import_module("redis")
        return
    except ImportError:
        for name in [m for m in sys.modules if m.partition(".")[0] == "redis"]:
            del sys.modules[name]
    finally:
        del sys.modules["opentelemetry"]
    importlib.import_module("redis")
