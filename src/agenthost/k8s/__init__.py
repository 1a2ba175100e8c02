"""Kubernetes deployment support: render the kustomize overlays in `deploy/kubernetes/`,
validate every object against the Kubernetes API schemas (and the project's schemas for the
KEDA and prometheus-operator CRDs), and check that the manifests agree with the code —
`agenthost k8s check` — plus the preStop hook that drains a pod, `agenthost k8s prestop`.
"""

from agenthost.k8s.problems import Problem

__all__ = ["Problem"]
