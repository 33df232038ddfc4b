"""Reaching a Ray cluster: the ``--cluster`` value, and Ray pinned to loopback.

Ray is imported here and only here, on first use: a run without ``--cluster`` never
imports it. Two environment settings are made before that import, because Ray reads
them once, at import time:

- ``RAY_USAGE_STATS_ENABLED=0``: Ray would otherwise report usage to its makers over
  the network; batchsr talks to nothing outside the cluster.
- For a cluster on this machine (``--cluster ray``, or an address on 127.0.0.1),
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray replaces a node address of 127.0.0.1 by
  the machine's routed address ("a remotely reachable IP", ``resolve_ip_for_localhost``)
  unless that setting is off; with it off, and ``_node_ip_address="127.0.0.1"``, the
  GCS, the raylets, the object managers, the workers' gRPC servers and the runtime-env
  agents all listen on 127.0.0.1 only (``tests/test_cluster.py`` reads the sockets to
  show it). The dashboard, which would listen too, is not started.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from batchsr.errors import ClusterError, setting

__all__ = ["LOOPBACK", "ClusterTarget", "connect", "find_cluster", "import_ray", "parse_cluster"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """Where to run.

    Attributes:
        address: Ray's ``address`` argument (``auto``, ``HOST:PORT`` of a GCS, or
            ``ray://HOST:PORT`` of a Ray Client server); None starts a Ray instance on
            this machine for the run.
        loopback: every process of the cluster is on this machine and must listen on
            127.0.0.1 only.
    """

    address: str | None
    loopback: bool

    @property
    def local(self) -> bool:
        return self.address is None


def parse_cluster(value: str) -> ClusterTarget:
    """Read a ``--cluster`` value: ``ray``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Raises:
        ClusterError: the value is none of those.
    """
    text = value.strip()
    if text == "ray":
        return ClusterTarget(address=None, loopback=True)
    if text == "auto":
        return ClusterTarget(address="auto", loopback=False)
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"{setting('cluster', repr(value))}: expected ray (a Ray instance on this "
            "machine), auto (the cluster this machine belongs to), HOST:PORT (a cluster's GCS) or "
            "ray://HOST:PORT (a Ray Client server)"
        )
    return ClusterTarget(address=text, loopback=_is_loopback(host.strip("[]")))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Ray itself retries an unreachable GCS for minutes, printing C++ warnings; a plain TCP
# connect says within seconds whether anything listens there.
_PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ClusterError(
            f"{setting('cluster', address)}: nothing answers there ({reason}); start the cluster "
            "(ray start --head) or give its GCS address, as ray status prints it"
        ) from err


def find_cluster() -> ClusterTarget:
    """What ``--cluster auto`` means, found as Ray finds it (``RAY_ADDRESS``, else the
    address file of the cluster last started on this host), but before Ray is
    imported: a cluster found on 127.0.0.1 must be joined with the loopback settings,
    which Ray reads at import.

    Raises:
        ClusterError: no cluster is known on this host.
    """
    address = os.environ.get("RAY_ADDRESS", "")
    if address in ("", "auto"):
        temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        try:
            address = (Path(temp) / "ray" / "ray_current_cluster").read_text().strip()
        except OSError:
            address = ""
    if not address:
        raise ClusterError(
            "`cluster = auto`: this host is in no Ray cluster (RAY_ADDRESS is unset and "
            "ray start was not run here); give the cluster's address, or `cluster = ray`"
        )
    return parse_cluster(address)


def import_ray(*, loopback: bool) -> ModuleType:
    """Ray, imported with its network settings made first (see the module docstring).

    Raises:
        ClusterError: Ray is not installed.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError as err:
        raise ClusterError(
            "a cluster run needs Ray, which is not installed: pip install -r requirements-ray.txt "
            "(or pip install 'batchsr[ray]') on the driver and on every node"
        ) from err
    return ray


def connect(
    target: ClusterTarget,
    *,
    num_cpus: int | None = None,
    resources: Mapping[str, float] | None = None,
) -> ModuleType:
    """Start or join the cluster; Ray, initialised. Call ``ray.shutdown()`` after.

    Args:
        num_cpus, resources: what a Ray instance started here offers (ignored when
            joining a cluster, whose nodes declared theirs with ``ray start``).

    Raises:
        ClusterError: Ray is missing or the cluster cannot be reached.
    """
    if target.address == "auto":
        target = find_cluster()
    if target.address is not None:
        _probe(target.address)
    ray = import_ray(loopback=target.loopback)
    common: dict[str, Any] = {
        # Workers' stdout would interleave with the CLI's summary; their records come
        # back with each chunk instead.
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "include_dashboard": False,
    }
    if target.loopback:
        common["_node_ip_address"] = LOOPBACK
    try:
        if target.local:
            # "local": always a new instance, even where another one runs here.
            ray.init(address="local", num_cpus=num_cpus, resources=dict(resources or {}), **common)
        else:
            common.pop("include_dashboard")
            if target.address is not None and target.address.startswith("ray://"):
                # A Ray Client driver runs no node processes of its own here.
                common.pop("_node_ip_address", None)
            ray.init(address=target.address, **common)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterError(
            f"cannot reach the Ray cluster at {target.address or 'a new local instance'}: "
            f"{err}; is it running (ray status)?"
        ) from err
    return ray
