"""What ``sluice render`` is told about the cluster it renders for: where images are pushed,
where the artifact store and the Kafka cluster are, and how job functions run.

Everything here has a default, so ``sluice render functions/pipeline.yaml -o out/`` works
with no flags; each default is a name a cluster operator replaces (``--image-registry``,
``--artifacts``, ``--kafka-bootstrap``), never a value sluice guesses from this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sluice.errors import SpecError

JobsMode = Literal["cronjob", "nuclio"]
JOBS_MODES: tuple[JobsMode, ...] = ("cronjob", "nuclio")

DEFAULT_REGISTRY = "localhost:5000/sluice"
DEFAULT_ARTIFACTS = "s3://sluice-artifacts"
DEFAULT_KAFKA = "kafka:9092"
DEFAULT_SECRET = "sluice-secrets"

_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[1-9]\d*(\.\d+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class RenderOptions:
    """The cluster's side of a render; invalid values raise SpecError naming the flag."""

    image_registry: str = DEFAULT_REGISTRY  # images: REGISTRY/FUNCTION:TAG, REGISTRY/sluice:TAG
    tag: str = "latest"
    namespace: str | None = None  # unset: kubectl's current namespace
    artifacts: str = DEFAULT_ARTIFACTS  # the model registry's store, as pods reach it
    kafka_bootstrap: str = DEFAULT_KAFKA  # for Kafka triggers that name no bootstrap_servers
    jobs: JobsMode = "cronjob"  # job functions as CronJobs, or as NuclioFunctions
    secret: str = DEFAULT_SECRET  # the Secret every sluice pod takes env from (optional)
    platform: bool = True  # also render the platform's own Deployment, Service, ConfigMap
    # the platform's state (functions, runs, logs) on a PersistentVolumeClaim of this size;
    # None: an emptyDir, lost when the pod moves
    state_size: str | None = "1Gi"

    def __post_init__(self) -> None:
        if not _REGISTRY.match(self.image_registry):
            raise SpecError(f"--image-registry {self.image_registry!r}: a registry and path "
                            "such as 'localhost:5000/sluice' or 'ghcr.io/acme/ml' (lowercase, "
                            "no trailing '/')")
        if not _TAG.match(self.tag):
            raise SpecError(f"--tag {self.tag!r}: letters, digits, '_', '.', '-' (at most 128)")
        if self.namespace is not None and not _DNS_LABEL.match(self.namespace):
            raise SpecError(f"--namespace {self.namespace!r}: a DNS label, e.g. 'ml'")
        if not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", self.artifacts):
            raise SpecError(f"--artifacts {self.artifacts!r}: a store pods can reach, e.g. "
                            "s3://bucket/prefix (a local folder is this machine's, not the "
                            "cluster's)")
        servers = [s.strip() for s in self.kafka_bootstrap.split(",")]
        if not all(re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", s) for s in servers):
            raise SpecError(f"--kafka-bootstrap {self.kafka_bootstrap!r}: HOST:PORT[,HOST:PORT]"
                            ", e.g. kafka.kafka.svc:9092")
        if self.jobs not in JOBS_MODES:
            raise SpecError(f"--jobs {self.jobs!r}: one of {', '.join(JOBS_MODES)}")
        if self.state_size is not None and not _QUANTITY.match(self.state_size):
            raise SpecError(f"--state-size {self.state_size!r}: a storage quantity such as "
                            "1Gi or 500Mi, or none for an emptyDir")
        if not _DNS_NAME.match(self.secret):
            raise SpecError(f"--secret {self.secret!r}: a Secret's name, e.g. sluice-secrets")

    def image(self, function: str) -> str:
        """The image a function's build context is built and pushed as."""
        return f"{self.image_registry}/{function}:{self.tag}"

    @property
    def base_image(self) -> str:
        """sluice itself (images/sluice/Dockerfile): every function's image starts FROM it, and
        the platform's Deployment runs it."""
        return self.image("sluice")

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",")]
