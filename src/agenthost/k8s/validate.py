"""Schema validation of rendered objects: built-in kinds against the Kubernetes API's own
schemas (the `kubernetes-validate` package, strict: unknown fields are errors), custom
resources against the project's schemas in `agenthost.k8s.crds`. A kind with neither is an
error too, so nothing goes unchecked."""

from __future__ import annotations

from typing import Any

from agenthost.k8s.crds import schema_for
from agenthost.k8s.problems import Problem, describe, format_path

__all__ = ["DEFAULT_KUBERNETES_VERSION", "validate_object", "validate_objects"]

# A Kubernetes release current at the time of writing; `agenthost k8s check
# --kubernetes-version` picks another.
DEFAULT_KUBERNETES_VERSION = "1.33"


def validate_object(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Messages about what is wrong with `obj`; empty when it is valid."""
    # Neither ships type information.
    import jsonschema  # type: ignore[import-untyped]
    import kubernetes_validate  # type: ignore[import-untyped]

    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    schema = schema_for(api_version, kind)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: str(list(e.absolute_path)))
        return [f"{format_path(e.absolute_path)}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{format_path(exc.absolute_path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"no schema for {api_version} {kind}: neither a Kubernetes {kubernetes_version} "
            "kind nor a custom resource with a schema in agenthost.k8s.crds"
        ]
    return []


def validate_objects(objects: list[dict[str, Any]], kubernetes_version: str) -> list[Problem]:
    """One problem per message, for every object."""
    return [
        Problem(describe(obj), message)
        for obj in objects
        for message in validate_object(obj, kubernetes_version)
    ]
