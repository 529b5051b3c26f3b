"""Test helper: a real multi-node Ray cluster on 127.0.0.1, in its own session, stopped by pid; socket checks.

    with LoopbackCluster(tmp_path, targets=(False, True)) as c:   # head unmarked, one marked worker node
        connect(c.address, ...)
        c.pids()                                                   # every process of the cluster
    # here every one of those pids is gone and the temp dirs are removed

Why not two `ray start` commands: in Ray 2.60 a `ray start` worker node cannot stay on loopback. Without
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray rewrites both `--address=127.0.0.1:PORT` and `--node-ip-address=127.0.0.1`
to the machine's network address (it then hangs: the head only listens on 127.0.0.1); with it `ray start` refuses
to start a worker node ("Multi-node Ray clusters are not supported on Windows and OSX"); and a node IP such as
127.0.0.2 makes every gRPC server listen on all interfaces. (Tried in a private network namespace.) So the cluster
is built with `ray.cluster_utils.Cluster`, Ray's documented tool for multi-node tests, which takes the node IP
as given, in a separate host process: this file run as a script. The host starts the nodes, prints
"READY <address>" once all are registered, adds nodes on request (`add_node`), and stops them (Cluster.shutdown)
when its stdin closes or on SIGTERM. It runs in a new session (start_new_session=True): its session id is its
pid, and every Ray process of the cluster, workers included, carries that id. `pids()` finds them in /proc;
`stop()` kills by pid whatever outlives the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from archdsl.search.cluster import TARGET_LABEL, ray_environment, remove_short_temp_dir, short_temp_dir


class LoopbackCluster:
    """A Ray cluster of len(targets) nodes on 127.0.0.1, 1 CPU each; node i carries the marker when targets[i].
    Node 0 is the head; `add_node` adds more. Files go to workdir/ray-cluster (reached through a short symlink)."""

    def __init__(self, workdir: str | os.PathLike, targets: tuple[bool, ...] = (False, True), *,
                 target_label: str = TARGET_LABEL, timeout: float = 60.0):
        self.workdir = Path(workdir)
        self.targets = tuple(targets)
        self.target_label = target_label
        self.timeout = timeout
        self.address: str | None = None
        self.startup_s: float | None = None  # start() to "all nodes registered", as seen by the caller
        self.stop_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._short: Path | None = None
        self._real: Path | None = None
        self._log: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> "LoopbackCluster":
        t0 = time.monotonic()
        self._real = self.workdir / "ray-cluster"
        self._short = short_temp_dir(self._real)
        (self._real / "ray").mkdir(exist_ok=True)  # RAY_TMPDIR/ray: where cluster_utils writes the address file
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(ray_environment(self._short))
        config = {"temp_dir": str(self._short / "ray"), "targets": list(self.targets), "label": self.target_label}
        self._log = self.workdir / "ray-cluster-host.log"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), json.dumps(config)],
                                          env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          start_new_session=True)
        try:
            self.address = self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        while True:
            left = self.timeout - (time.monotonic() - t0)
            if left <= 0:
                raise TimeoutError(f"Ray loopback cluster not ready after {self.timeout:g} s\n{self._log_tail()}")
            ready, _, _ = select.select([out], [], [], left)
            if not ready:
                continue
            line = out.readline().decode()
            if not line:
                raise RuntimeError(f"Ray loopback cluster host exited (rc {self._proc.wait()})\n{self._log_tail()}")
            if line.startswith("READY "):
                return line.split()[1]

    def add_node(self, target: bool) -> float:
        """Add a node (marked when `target`) and wait until it is registered; returns the seconds it took."""
        assert self._proc is not None, "cluster not started"
        t0 = time.monotonic()
        self._proc.stdin.write(f"ADD {int(target)}\n".encode())
        self._proc.stdin.flush()
        self._wait_ready(t0)
        self.targets += (target,)
        return time.monotonic() - t0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> set[int]:
        """Stop the cluster: ask the host (Cluster.shutdown), then SIGKILL any process of the session still alive,
        wait until all are gone, and remove the temp dirs. Returns the pids the cluster had."""
        t0 = time.monotonic()
        proc, self._proc = self._proc, None
        pids: set[int] = set()
        if proc is not None:
            pids = self.pids(proc.pid)
            starts = {p: _start_time(p) for p in pids}
            try:
                proc.stdin.close()
                proc.wait(timeout=30)
            except BrokenPipeError:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # The host is gone; kill what survived by pid: a process of the snapshot if it is still the same one
            # (same start time), and any later member of the session. The kernel does not hand out a pid while a
            # live process still has it as session id, so members of our session can only be ours, unless none was
            # left and the pid went to a new session leader: then a process with that very pid exists.
            later = self.pids(proc.pid)
            if proc.pid in later:
                later = set()
            leftovers = {p for p in pids if alive(p) and _start_time(p) == starts[p]} | later
            for p in leftovers:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while any(alive(p) for p in pids | leftovers) and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.stdout.close()
        if self._short is not None:
            remove_short_temp_dir(self._short)
            self._short = None
        if self._real is not None:
            shutil.rmtree(self._real, ignore_errors=True)
            self._real = None
        self.stop_s = time.monotonic() - t0
        return pids

    def pids(self, sid: int | None = None) -> set[int]:
        """Every live process of the cluster: the host and all it started (same session id)."""
        sid = sid if sid is not None else (self._proc.pid if self._proc else None)
        return set() if sid is None else {p for p, st in _proc_stats() if st["sid"] == sid and st["state"] != "Z"}

    def _log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    def __enter__(self) -> "LoopbackCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- processes and sockets (Linux /proc) ----------------------------------------------------------------------


def _proc_stats():
    """(pid, {state, ppid, sid, start}) of every process, read from /proc/<pid>/stat."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        yield int(entry.name), {"state": rest[0], "ppid": int(rest[1]), "sid": int(rest[3]), "start": int(rest[19])}


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[19])


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of `pid`, by parent links."""
    children: dict[int, list[int]] = {}
    for p, st in _proc_stats():
        if st["state"] != "Z":
            children.setdefault(st["ppid"], []).append(p)
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _parse_addr(hex_addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """/proc/net/tcp{,6} "0100007F:1F90" -> (127.0.0.1, 8080); addresses are in host (little-endian) word order."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every TCP socket in LISTEN state held by one of `pids`."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # TCP_LISTEN
                ip, port = _parse_addr(f[1])
                by_inode[f[9]] = (str(ip), port)
    found = []
    for pid in sorted(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in by_inode:
                found.append((pid, *by_inode[target[8:-1]]))
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.0.0.1, how Ray's gRPC servers show up)."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


# -- the host process ---------------------------------------------------------------------------------------


def _host(config: dict) -> None:
    """Start the nodes; answer "READY <address>" when all are registered, then read commands from stdin:
    "ADD 0|1" adds a node (1: marked) and answers READY again; end of input stops the cluster and exits."""
    from ray.cluster_utils import Cluster

    label = config["label"]

    def node_args(target: bool) -> dict:
        return {"node_ip_address": "127.0.0.1", "num_cpus": 1, "resources": {label: 1} if target else {}}

    # Head: no dashboard; dashboard agent on a random port, not Ray's fixed 52365 that parallel clusters would
    # fight over; no log monitor (the tests do not stream worker logs).
    head = dict(node_args(config["targets"][0]), temp_dir=config["temp_dir"], include_dashboard=False,
                dashboard_agent_listen_port=None, include_log_monitor=False)
    cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)

    def stop(*_):
        cluster.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for target in config["targets"][1:]:
        cluster.add_node(**node_args(target))
    while True:
        cluster.wait_for_nodes()
        sys.stdout.write(f"READY {cluster.address}\n")
        sys.stdout.flush()
        line = sys.stdin.readline()  # "" when the test closes stdin (or dies)
        if not line.startswith("ADD "):
            stop()
        cluster.add_node(**node_args(line.split()[1] == "1"))


if __name__ == "__main__":
    _host(json.loads(sys.argv[1]))
