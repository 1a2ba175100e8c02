"""JSON schemas for the custom resources the manifests use, which the Kubernetes API schemas
do not cover: KEDA's ScaledObject and TriggerAuthentication, and prometheus-operator's
ServiceMonitor.

Written from the CRDs' documented fields, covering the fields a deployment sets.
`additionalProperties: false` wherever a misspelt field would otherwise be dropped without a
word by the API server or by the operator (KEDA ignores unknown trigger metadata).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CRD_SCHEMAS", "schema_for"]

Schema = dict[str, Any]

_STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_METADATA: Schema = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "generateName": {"type": "string"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}

_LABEL_SELECTOR: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


# -- KEDA: keda.sh/v1alpha1 ScaledObject ------------------------------------------------------

_SCALING_RULES: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "tolerance": {"type": ["string", "number"]},
        "policies": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "value", "periodSeconds"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "exclusiveMinimum": 0},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
            },
        },
    },
}

_NUMBER_TEXT: Schema = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}

# Trigger metadata KEDA's Prometheus scaler reads; anything else it ignores silently.
_PROMETHEUS_METADATA: Schema = {
    "type": "object",
    "required": ["serverAddress", "query", "threshold"],
    "additionalProperties": False,
    "properties": {
        "serverAddress": {"type": "string", "pattern": "^https?://"},
        "query": {"type": "string", "minLength": 1},
        "queryParameters": {"type": "string"},
        "threshold": _NUMBER_TEXT,
        "activationThreshold": _NUMBER_TEXT,
        "namespace": {"type": "string"},
        "customHeaders": {"type": "string"},
        "ignoreNullValues": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
        "timeout": {"type": "string"},
        "authModes": {"type": "string"},
    },
}

# Trigger metadata KEDA's PostgreSQL scaler reads: a query returning a number, and either a
# connection (`connectionFromEnv`, or a TriggerAuthentication's `connection`) or its parts.
_POSTGRESQL_METADATA: Schema = {
    "type": "object",
    "required": ["query", "targetQueryValue"],
    "additionalProperties": False,
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "targetQueryValue": _NUMBER_TEXT,
        "activationTargetQueryValue": _NUMBER_TEXT,
        "connectionFromEnv": {"type": "string"},
        "host": {"type": "string"},
        "port": {"type": "string", "pattern": "^[0-9]+$"},
        "userName": {"type": "string"},
        "passwordFromEnv": {"type": "string"},
        "dbName": {"type": "string"},
        "sslmode": {"enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
    },
}

_TRIGGER: Schema = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "metadata": _STRING_MAP,
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
        },
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "prometheus"}}},
            "then": {"properties": {"metadata": _PROMETHEUS_METADATA}},
        },
        {
            "if": {"properties": {"type": {"const": "postgresql"}}},
            "then": {"properties": {"metadata": _POSTGRESQL_METADATA}},
        },
    ],
}

_REPLICAS: Schema = {"type": "integer", "minimum": 0}

SCALED_OBJECT: Schema = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "envSourceContainerName": {"type": "string"},
                },
            },
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "initialCooldownPeriod": {"type": "integer", "minimum": 0},
            "idleReplicaCount": _REPLICAS,
            "minReplicaCount": _REPLICAS,
            "maxReplicaCount": _REPLICAS,
            "fallback": {
                "type": "object",
                "required": ["failureThreshold", "replicas"],
                "additionalProperties": False,
                "properties": {
                    "failureThreshold": {"type": "integer", "minimum": 1},
                    "replicas": _REPLICAS,
                    "behavior": {
                        "enum": [
                            "static",
                            "currentReplicas",
                            "currentReplicasIfHigher",
                            "currentReplicasIfLower",
                        ]
                    },
                },
            },
            "advanced": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "behavior": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "scaleUp": _SCALING_RULES,
                                    "scaleDown": _SCALING_RULES,
                                },
                            },
                        },
                    },
                    "scalingModifiers": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "formula": {"type": "string"},
                            "target": {"type": "string"},
                            "activationTarget": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value"]},
                        },
                    },
                },
            },
            "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
        },
    },
)

# -- prometheus-operator: monitoring.coreos.com/v1 ServiceMonitor -----------------------------

_DURATION: Schema = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}

_RELABEL: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                "dropequal", "DropEqual",
            ]
        },
    },
}  # fmt: skip

_ENDPOINT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object"},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
        "bearerTokenFile": {"type": "string"},
        "bearerTokenSecret": {"type": "object"},
        "authorization": {"type": "object"},
        "basicAuth": {"type": "object"},
        "oauth2": {"type": "object"},
        "tlsConfig": {"type": "object"},
        "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "proxyUrl": {"type": "string"},
        "noProxy": {"type": "string"},
        "proxyFromEnvironment": {"type": "boolean"},
        "proxyConnectHeader": {"type": "object"},
    },
}

_COUNT: Schema = {"type": "integer", "minimum": 0}

SERVICE_MONITOR: Schema = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector"],
        "additionalProperties": False,
        "properties": {
            "selector": _LABEL_SELECTOR,
            "endpoints": {"type": "array", "items": _ENDPOINT},
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "sampleLimit": _COUNT,
            "targetLimit": _COUNT,
            "labelLimit": _COUNT,
            "labelNameLengthLimit": _COUNT,
            "labelValueLengthLimit": _COUNT,
            "keepDroppedTargets": _COUNT,
            "bodySizeLimit": {"type": "string"},
            "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
            "fallbackScrapeProtocol": {"type": "string"},
            "scrapeClass": {"type": "string"},
            "scrapeClassicHistograms": {"type": "boolean"},
            "selectorMechanism": {"enum": ["RelabelConfig", "RoleSelector"]},
            "serviceDiscoveryRole": {"enum": ["Endpoints", "EndpointSlice"]},
            "attachMetadata": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"node": {"type": "boolean"}},
            },
        },
    },
)

# -- KEDA: keda.sh/v1alpha1 TriggerAuthentication -----------------------------------------------

TRIGGER_AUTHENTICATION: Schema = _resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"type": "string", "minLength": 1},
                        "name": {"type": "string", "minLength": 1},
                        "key": {"type": "string", "minLength": 1},
                    },
                },
            },
            "env": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"type": "string", "minLength": 1},
                        "name": {"type": "string", "minLength": 1},
                        "containerName": {"type": "string"},
                    },
                },
            },
        },
    },
)

CRD_SCHEMAS: dict[tuple[str, str], Schema] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}


def schema_for(api_version: str, kind: str) -> Schema | None:
    """The project's schema for a custom resource, None for any other."""
    return CRD_SCHEMAS.get((api_version, kind))
