"""structlog, imported without rich unless rich is loaded already.

structlog's console renderer draws exceptions with rich when rich can be imported, and its
`dev` module imports rich (with pygments and attrs) as structlog itself is imported: about
a fifth of a server's start-up CPU, for tracebacks a server's logs never draw that way (its
JSON lines carry plain ones). With rich hidden, console lines show plain tracebacks. A
command that draws with rich has loaded it first, and structlog finds it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["load_structlog"]


def load_structlog() -> ModuleType:
    """The `structlog` module; imported with rich hidden if neither is loaded yet, and again
    with rich if that import fails (a structlog that cannot do without it)."""
    if "rich" in sys.modules or "structlog" in sys.modules:
        return importlib.import_module("structlog")
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` -> ImportError
    try:
        return importlib.import_module("structlog")
    except ImportError:
        for name in [m for m in sys.modules if m.partition(".")[0] == "structlog"]:
            del sys.modules[name]
    finally:
        del sys.modules["rich"]
    return importlib.import_module("structlog")
