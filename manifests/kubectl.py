"""``sluice render --apply``: ``kubectl apply -f OUT`` where a cluster is configured.

A kubeconfig is present when ``$KUBECONFIG`` names a file that exists (the first of its
list that does) or, with ``$KUBECONFIG`` unset, ``~/.kube/config`` exists. Without one, or
without ``kubectl``, nothing is run and a PlatformError says so: the caller exits non-zero,
because what was asked (apply) was not done, even though the manifests were written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from sluice.errors import PlatformError


def find_kubeconfig(environ: Mapping[str, str] | None = None,
                    home: Path | None = None) -> Path | None:
    """The kubeconfig kubectl would use, or None."""
    environ = os.environ if environ is None else environ
    listed = environ.get("KUBECONFIG")
    if listed:
        for item in listed.split(os.pathsep):
            if item and Path(item).expanduser().is_file():
                return Path(item).expanduser()
        return None
    default = (home or Path.home()) / ".kube" / "config"
    return default if default.is_file() else None


def apply(out: Path) -> str:
    """Run ``kubectl apply -f OUT``; its output, or PlatformError."""
    config = find_kubeconfig()
    if config is None:
        where = (f"KUBECONFIG={os.environ['KUBECONFIG']} names no file that exists"
                 if os.environ.get("KUBECONFIG") else
                 "KUBECONFIG is not set and ~/.kube/config does not exist")
        raise PlatformError(f"--apply: no kubeconfig ({where}), so nothing was applied; the "
                         f"manifests are in {out}: apply them with `kubectl apply -f {out}` "
                         "where a cluster is configured")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise PlatformError(f"--apply: kubectl is not on PATH (kubeconfig: {config}); the "
                         f"manifests are in {out}")
    result = subprocess.run([kubectl, "apply", "-f", str(out)], capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise PlatformError(f"kubectl apply -f {out} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return result.stdout
