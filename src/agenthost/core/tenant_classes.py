"""Tenant classes: a bounded label for per-tenant figures.

Tenants are free names (an API key's), so a metric labelled by tenant would have as many
series as there are tenants. `--tenant-classes` groups them for the work queue's gauges:
`gold=acme,globex;silver=initech` puts acme and globex in class `gold`, initech in `silver`
and every other tenant in `other`; at most `MAX_CLASSES` classes, so the label set stays
small whatever the number of tenants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_CLASSES", "OTHER", "TenantClasses"]

MAX_CLASSES = 16
OTHER = "other"
_CLASS = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}|-")  # "-": the unauthenticated tenant ("")


class TenantClasses:
    """Which class each tenant is in (see the module's docstring)."""

    def __init__(self, spec: str = "") -> None:
        """Parse `spec`; ValueError naming what is wrong."""
        self._of: dict[str, str] = {}
        names: list[str] = []
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            name, sep, members = part.partition("=")
            name = name.strip()
            if not sep or not _CLASS.fullmatch(name) or name == OTHER:
                raise ValueError(
                    f"{part!r}: write class=tenant,tenant; a class is 1-32 lower-case letters, "
                    f"digits or '_' (not {OTHER!r}, the class of every tenant not listed)"
                )
            if name in names:
                raise ValueError(f"class {name!r} is given twice")
            names.append(name)
            for tenant in filter(None, (t.strip() for t in members.split(","))):
                if not _TENANT.fullmatch(tenant):
                    raise ValueError(f"{tenant!r} is not a tenant name")
                if tenant in self._of:
                    raise ValueError(f"tenant {tenant!r} is in two classes")
                self._of["" if tenant == "-" else tenant] = name
        if len(names) > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes (the metric's label set)")
        self.names = [*names, OTHER] if names else []
        """Every class, `other` last; empty when none is configured."""

    def class_of(self, tenant: str) -> str:
        return self._of.get(tenant, OTHER)

    def oldest_by_class(self, oldest_by_tenant: Mapping[str, float]) -> dict[str, float]:
        """The age of each class's oldest queued turn (0 for a class with none)."""
        ages = dict.fromkeys(self.names, 0.0)
        for tenant, age in oldest_by_tenant.items():
            name = self.class_of(tenant)
            ages[name] = max(ages.get(name, 0.0), age)
        return ages
