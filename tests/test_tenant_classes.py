"""--tenant-classes: a bounded label for per-tenant figures, refused when malformed."""

from __future__ import annotations

import pytest

from agenthost.core.settings import Settings, SettingsError
from agenthost.core.tenant_classes import MAX_CLASSES, TenantClasses


def test_tenants_fall_in_their_class_and_every_other_in_other() -> None:
    classes = TenantClasses("gold=acme, globex; silver=initech;free=-")
    assert classes.names == ["gold", "silver", "free", "other"]
    assert [classes.class_of(t) for t in ("acme", "globex", "initech", "", "zeta")] == [
        "gold", "gold", "silver", "free", "other",
    ]  # fmt: skip
    # Each class's oldest turn; a class with none reads 0.
    ages = classes.oldest_by_class({"acme": 3.0, "globex": 7.5, "zeta": 1.0, "bob": 2.0})
    assert ages == {"gold": 7.5, "silver": 0.0, "free": 0.0, "other": 2.0}


def test_no_classes_means_no_label() -> None:
    assert TenantClasses("").names == []
    assert TenantClasses("").oldest_by_class({"acme": 1.0}) == {"other": 1.0}


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("gold", "write class=tenant"),
        ("Gold=acme", "lower-case"),
        ("other=acme", "not 'other'"),
        ("gold=acme;gold=globex", "given twice"),
        ("gold=acme;silver=acme", "in two classes"),
        ("gold=ac me", "not a tenant name"),
        (";".join(f"c{n}=t{n}" for n in range(MAX_CLASSES + 1)), f"at most {MAX_CLASSES}"),
    ],
)
def test_a_malformed_spec_is_refused_with_why(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TenantClasses(spec)
    with pytest.raises(SettingsError, match="tenant_classes"):
        Settings(tenant_classes=spec)
