"""Stage 6 (search): how `archdsl search` reaches Ray, and which node measures latency.

Takes: a Ray address (None, "auto", "HOST:PORT" or "ray://HOST:PORT"), a working directory for Ray's files and the
name of the target-hardware marker. Returns: `ClusterInfo` (the alive nodes and which of them carry the marker),
and, from `latency_task_options`, the task options that pin a latency measurement to a marked node.

Address None starts an embedded Ray on this machine, bound to 127.0.0.1 only, whose one node is the target.
Any other address joins an existing cluster (`ray.init(address=...)`); with "HOST:PORT" or "auto" this machine
must itself run a node of that cluster (Ray's rule for drivers), "ray://" needs the `ray[client]` extra.

The target-hardware marker is a custom resource, capacity 1, on every node whose latency counts. Label a node:

    ray start --head --resources='{"archdsl-target": 1}'                          # the head is the target
    ray start --address=HEAD_IP:6379 --resources='{"archdsl-target": 1}'          # or a worker is

(another name with `archdsl search --target-label NAME`; such a cluster listens on the network, so secure it, e.g.
with Ray's token auth, RAY_AUTH_MODE=token). A one-machine cluster that stays on loopback needs the variable below:

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address=127.0.0.1 --include-dashboard=false \
        --resources='{"archdsl-target": 1}'

A latency task asks for one unit of it, so it runs only
on a marked node and, the capacity being 1, one measurement at a time per marked machine. Ray 2.60 also has node
labels (`ray start --labels=archdsl-target=1` plus `label_selector={"archdsl-target": "1"}`); both work on 2.60,
but `--labels` is hidden from `ray start --help` and Ray's docs call label selectors beta/experimental, and a label
would not serialize measurements. Custom resources have been stable since Ray's first releases.

Loopback: Ray binds to the machine's network address by default, an unauthenticated cluster open to the network.
`ray_environment` holds what keeps the embedded instance on 127.0.0.1. The subtle one is
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: on Linux Ray otherwise rewrites "127.0.0.1" (in `_node_ip_address`, in an
address) to the address of the default route, and any node IP other than the literal 127.0.0.1 (127.0.0.2
included) makes Ray's gRPC servers listen on every interface. Ray reads that variable once, when it is imported,
so `connect` also overrides the value Ray cached if Ray was imported first, and refuses to go on if the embedded
node still is not on 127.0.0.1. (The same variable makes `ray start --address=...` refuse to start a worker node:
a `ray start` worker cannot be put on loopback in Ray 2.60; tests/ray_cluster.py builds its loopback cluster with
`ray.cluster_utils` instead.)

Temp dir: Ray puts unix sockets under `<temp dir>/session_<date>_<pid>/sockets/`, and a socket path may not pass
107 bytes. A `temp_dir` longer than `MAX_TEMP_DIR_CHARS` is reached through a symlink
`/tmp/adsl-<12 hex digits of sha256(temp_dir)>/r` in a directory private to this user, so Ray's logs still land in
`temp_dir` (see `short_temp_dir`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "TARGET_LABEL",
    "MAX_TEMP_DIR_CHARS",
    "ClusterError",
    "NodeInfo",
    "ClusterInfo",
    "ray_environment",
    "short_temp_dir",
    "remove_short_temp_dir",
    "label_flag",
    "connect",
    "latency_task_options",
    "shutdown",
]

TARGET_LABEL = "archdsl-target"

# Ray appends "/session_2026-11-21_08-35-59_883442_<pid>/sockets/plasma_store" (64 characters with a 7-digit
# pid) to its temp dir; a unix socket path holds at most 107. 40 leaves a margin for longer socket names.
MAX_TEMP_DIR_CHARS = 40
_SHORT_PREFIX = "adsl-"
_SHORT_LINK = "r"

# Keeps "127.0.0.1" literal in Ray (see the module docstring and ray_environment()).
_ENABLE_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(Exception):
    """Ray could not be reached, or no alive node carries the target-hardware marker (the message says how)."""


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node: its id, IP, total resources and labels, and whether it may measure latency."""

    node_id: str
    ip: str
    resources: Mapping[str, float]
    labels: Mapping[str, str]
    is_head: bool
    is_target: bool

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))


@dataclass(frozen=True)
class ClusterInfo:
    """What `connect` found: the GCS address, whether `connect` started Ray itself (`local`), and the nodes."""

    address: str
    local: bool
    target_label: str
    nodes: tuple[NodeInfo, ...] = field(default_factory=tuple)

    @property
    def target_nodes(self) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes if n.is_target)

    @property
    def cpus(self) -> float:
        """CPUs of all alive nodes together."""
        return sum(n.cpus for n in self.nodes)

    def describe(self) -> str:
        """A few lines for the CLI: where Ray runs and which nodes measure latency."""
        kind = "embedded Ray (127.0.0.1)" if self.local else f"Ray cluster at {self.address}"
        lines = [f"{kind}: {len(self.nodes)} node(s), {self.cpus:g} CPUs, "
                 f"{len(self.target_nodes)} marked {self.target_label!r}"]
        for n in self.nodes:
            marks = [m for m, on in (("head", n.is_head), ("target", n.is_target)) if on]
            lines.append(f"  {n.node_id[:12]} {n.ip} {n.cpus:g} CPUs" + (f" ({', '.join(marks)})" if marks else ""))
        return "\n".join(lines)


def label_flag(target_label: str = TARGET_LABEL) -> str:
    """The `ray start` flag that marks a node as target hardware, e.g. --resources='{"archdsl-target": 1}'."""
    return f"--resources='{{\"{target_label}\": 1}}'"


def ray_environment(temp_dir: str | os.PathLike | None) -> dict[str, str]:
    """Environment variables to set before an embedded Ray (or a test's loopback cluster) starts.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  "127.0.0.1" stays 127.0.0.1 and is the default node IP (see the module
                                         docstring); a node not on 127.0.0.1 listens on every interface
    RAY_AUTH_MODE=disabled               no token: Ray 2.60 otherwise turns token auth on for a new local instance
                                         and writes ~/.ray/auth_token; loopback is the protection here
    RAY_USAGE_STATS_ENABLED=0            nothing reports to the internet
    RAY_TMPDIR=<temp_dir>                Ray's default temp root (its "current cluster" file), when temp_dir is given

    The dashboard is not an environment setting: `connect` passes include_dashboard=False.
    """
    env = {_ENABLE_CLUSTER: "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    if temp_dir is not None:
        env["RAY_TMPDIR"] = str(temp_dir)
    return env


def short_temp_dir(temp_dir: str | os.PathLike) -> Path:
    """Create `temp_dir` and return a path to it short enough for Ray's unix sockets: `temp_dir` itself when it has
    at most MAX_TEMP_DIR_CHARS characters, else the symlink /tmp/adsl-<hash of temp_dir>/r -> temp_dir. The same
    temp_dir gets the same link (a run resumed after a kill reuses it); a directory of that name that is not
    private to this user is never trusted: a fresh one from mkdtemp is used instead. Undo with
    `remove_short_temp_dir`."""
    real = Path(temp_dir).absolute()
    real.mkdir(parents=True, exist_ok=True)
    if len(str(real)) <= MAX_TEMP_DIR_CHARS:
        return real
    base = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir())
    home = base / f"{_SHORT_PREFIX}{hashlib.sha256(str(real).encode()).hexdigest()[:12]}"
    try:
        home.mkdir(mode=0o700)
    except FileExistsError:
        st = os.lstat(home)
        if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077):
            home = Path(tempfile.mkdtemp(prefix=_SHORT_PREFIX, dir=base))
    link = home / _SHORT_LINK
    try:
        link.symlink_to(real, target_is_directory=True)
    except FileExistsError:  # left by a killed run on the same temp_dir, or made by a concurrent connect
        if not (link.is_symlink() and os.readlink(link) == str(real)):
            link = Path(tempfile.mkdtemp(prefix=_SHORT_PREFIX, dir=base)) / _SHORT_LINK
            link.symlink_to(real, target_is_directory=True)
    return link


def remove_short_temp_dir(path: str | os.PathLike) -> None:
    """Remove the symlink and its directory made by `short_temp_dir`; leave any other path alone."""
    link = Path(path)
    if link.is_symlink() and link.name == _SHORT_LINK and link.parent.name.startswith(_SHORT_PREFIX):
        link.unlink()
        try:
            link.parent.rmdir()
        except OSError:  # not empty: not only ours
            pass


def latency_task_options(target_label: str = TARGET_LABEL) -> dict[str, Any]:
    """Options for `remote_fn.options(**...)` that run a latency measurement on a marked node, one at a time there.

    resources    one unit of the marker: only marked nodes qualify, capacity 1 serializes measurements per node
    num_cpus=0   no CPU slot: a trial holding its CPU (Tune reserves every CPU for trials) must not wait on it;
                 keeping trials off the target's cores while it measures is the caller's scheduling choice
    scheduling_strategy="DEFAULT"
                 Tune captures a trial's child tasks in the trial's placement group, whose bundle has no marker;
                 an explicit strategy takes the measurement out of it
    """
    return {"resources": {target_label: 1}, "num_cpus": 0, "scheduling_strategy": "DEFAULT"}


@dataclass
class _Connection:
    """What connect() changed in this process, so that shutdown() undoes exactly that."""

    local: bool
    saved_env: dict[str, str | None]
    short_dir: Path | None
    saved_enable_cluster: Any = None  # Ray's cached RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, when connect overrode it


_CONNECTION: _Connection | None = None


def connect(address: str | None, *, temp_dir: str | os.PathLike, num_cpus: int | None = None,
            target_label: str = TARGET_LABEL, log_to_driver: bool = False) -> ClusterInfo:
    """Start an embedded Ray (address None) or join the cluster at `address`; check a node carries the marker.

    temp_dir and num_cpus apply to the embedded Ray only (a joined cluster keeps its own). Raises ClusterError when
    Ray is already initialized in this process, when the address cannot be reached, or when no alive node carries
    `target_label` (the message gives the `ray start` flag). Undo with `shutdown()`.
    """
    global _CONNECTION
    import ray

    if _CONNECTION is not None or ray.is_initialized():
        raise ClusterError("Ray is already initialized in this process; call archdsl.search.cluster.shutdown() "
                           "(or ray.shutdown()) before connecting again")
    local = address is None
    short = short_temp_dir(temp_dir) if local else None
    # Joining: only what keeps "127.0.0.1" literal and stats off; the cluster's own auth mode stays the user's.
    env = ray_environment(short) if local else {_ENABLE_CLUSTER: "0", "RAY_USAGE_STATS_ENABLED": "0"}
    conn = _Connection(local=local, saved_env={k: os.environ.get(k) for k in env}, short_dir=short)
    os.environ.update(env)
    conn.saved_enable_cluster = _force_loopback_default()
    _CONNECTION = conn
    try:
        if local:
            ray.init(address="local", num_cpus=num_cpus, resources={target_label: 1},
                     _node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=str(short),
                     log_to_driver=log_to_driver)
        else:
            ray.init(address=address, log_to_driver=log_to_driver)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        shutdown()
        raise ClusterError(f"cannot connect to Ray at {address!r}: {e}") from e
    except BaseException:
        shutdown()
        raise
    try:
        info = _cluster_info(address, local, target_label)
        _check(info)
    except BaseException:
        shutdown()
        raise
    return info


def shutdown() -> None:
    """Disconnect from Ray and stop the embedded instance, if `connect` started them; a no-op otherwise (a Ray
    initialized by someone else stays). Restores the environment variables `connect` set."""
    global _CONNECTION
    conn, _CONNECTION = _CONNECTION, None
    if conn is None:
        return
    import ray

    try:
        ray.shutdown()
    finally:
        for k, v in conn.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if conn.saved_enable_cluster is not None:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = conn.saved_enable_cluster
        if conn.short_dir is not None:
            remove_short_temp_dir(conn.short_dir)


def _force_loopback_default() -> Any:
    """Ray caches RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; if it was imported before connect() set the
    variable, override the cached value (private, checked: Ray reads it on every call). Returns the old value to
    restore, or None when nothing was changed. `_check` verifies the effect on the embedded node either way."""
    from ray._private import ray_constants

    old = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if old is None or not old:
        return None
    ray_constants.ENABLE_RAY_CLUSTER = False
    return old


def _cluster_info(address: str | None, local: bool, target_label: str) -> ClusterInfo:
    import ray

    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - Ray Client mode has no GCS address to show
        gcs = address or ""
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        resources = {k: float(v) for k, v in n.get("Resources", {}).items()}
        nodes.append(NodeInfo(node_id=n["NodeID"], ip=n.get("NodeManagerAddress", ""),
                              resources=MappingProxyType(resources),
                              labels=MappingProxyType(dict(n.get("Labels") or {})),
                              is_head="node:__internal_head__" in resources,
                              is_target=resources.get(target_label, 0.0) >= 1.0))
    nodes.sort(key=lambda n: (not n.is_head, n.ip, n.node_id))
    return ClusterInfo(address=gcs, local=local, target_label=target_label, nodes=tuple(nodes))


def _check(info: ClusterInfo) -> None:
    if info.local:
        exposed = [n.ip for n in info.nodes if not _is_loopback(n.ip)]
        if exposed:
            raise ClusterError(f"the embedded Ray node came up on {', '.join(exposed)}, not 127.0.0.1; refusing to "
                               f"run an unauthenticated Ray there (set {_ENABLE_CLUSTER}=0 before Ray is imported)")
    if not info.target_nodes:
        seen = ", ".join(f"{n.ip} ({n.node_id[:12]})" for n in info.nodes) or "none"
        raise ClusterError(
            f"no alive Ray node at {info.address or 'this address'} carries the target-hardware marker "
            f"{info.target_label!r} (alive nodes: {seen}). On the machine whose latency counts, start Ray with "
            f"{label_flag(info.target_label)}, e.g. `ray start --address={info.address or 'HEAD_IP:PORT'} "
            f"{label_flag(info.target_label)}`, or search without --address to measure on this machine")


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"
