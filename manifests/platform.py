"""The platform's own resources: ``sluice up`` in the cluster, beside the functions.

- ConfigMap ``sluice-config``: the platform's ``config.yaml`` (the Kafka cluster, the artifact
  store), mounted as ``$SLUICE_HOME/config.yaml``, as on one machine;
- Deployment ``sluice-platform``: one replica of the sluice image running
  ``sluice up --no-broker`` (the cluster has Kafka);
- PersistentVolumeClaim ``sluice-state`` (``--state-size``, 1Gi by default): the platform's
  state (functions, runs, logs: ``$SLUICE_HOME``), which outlives the pod as it does a
  restart on one machine; ``--state-size none`` puts it in an ``emptyDir`` instead, so the
  platform starts afresh whenever its pod moves;
- Service ``sluice-platform``: the API and the Nuclio dashboard API on port 8070;
- Secrets by reference only: the API token from the Secret ``sluice-token`` (key ``token``,
  mounted as ``$SLUICE_HOME/token``: without it the pod does not start, rather than run an API
  open to the cluster), and optional env from the platform-wide Secret (``--secret``).

``SLUICE_API_HOST=0.0.0.0`` asks the API to listen beyond the pod's loopback, which a Service
needs (the local default is 127.0.0.1).
"""

from __future__ import annotations

from typing import Any

import yaml

from .cluster_spec import standard_labels
from .options import RenderOptions
from .secrets import env_from

NAME = "sluice-platform"
CONFIG_MAP = "sluice-config"
STATE_CLAIM = "sluice-state"
TOKEN_SECRET = "sluice-token"
API_PORT = 8070
HOME = "/var/lib/sluice"


def _metadata(name: str, options: RenderOptions, pipeline: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": standard_labels(NAME, pipeline)}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return metadata


def platform_resources(options: RenderOptions, pipeline: str | None) -> list[dict[str, Any]]:
    """The ConfigMap, state claim, Deployment and Service of the platform."""
    config = {"kafka": {"bootstrap_servers": options.kafka_bootstrap},
              "artifacts": options.artifacts}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": _metadata(CONFIG_MAP, options, pipeline),
                  "data": {"config.yaml": yaml.safe_dump(config, sort_keys=False)}}
    selector = {"app.kubernetes.io/name": NAME}
    container = {
        "name": "platform",
        "image": options.base_image,
        "command": ["sluice", "up", "--no-broker"],
        "env": [{"name": "SLUICE_HOME", "value": HOME},
                {"name": "SLUICE_API_PORT", "value": str(API_PORT)},
                {"name": "SLUICE_API_HOST", "value": "0.0.0.0"}],
        "envFrom": env_from(options.secret),
        "ports": [{"name": "api", "containerPort": API_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": API_PORT}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "state", "mountPath": HOME},
            {"name": "config", "mountPath": f"{HOME}/config.yaml", "subPath": "config.yaml",
             "readOnly": True},
            {"name": "token", "mountPath": f"{HOME}/token", "subPath": "token",
             "readOnly": True},
        ],
    }
    volumes = [
        {"name": "state", "emptyDir": {}} if options.state_size is None else
        {"name": "state", "persistentVolumeClaim": {"claimName": STATE_CLAIM}},
        {"name": "config", "configMap": {"name": CONFIG_MAP}},
        {"name": "token", "secret": {"secretName": TOKEN_SECRET,
                                     "items": [{"key": "token", "path": "token"}]}},
    ]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(NAME, options, pipeline),
        "spec": {
            "replicas": 1,  # one control plane: its state is one SQLite file
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": standard_labels(NAME, pipeline)},
                         "spec": {"containers": [container], "volumes": volumes}},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(NAME, options, pipeline),
        "spec": {"selector": selector,
                 "ports": [{"name": "api", "port": API_PORT, "targetPort": "api",
                            "protocol": "TCP"}]},
    }
    if options.state_size is None:
        return [config_map, deployment, service]
    claim = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": _metadata(STATE_CLAIM, options, pipeline),
        "spec": {"accessModes": ["ReadWriteOnce"],  # one pod: the Deployment recreates it
                 "resources": {"requests": {"storage": options.state_size}}},
    }
    return [config_map, claim, deployment, service]
