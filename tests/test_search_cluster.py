"""archdsl.search.cluster on real Ray: an embedded instance, then one loopback cluster that first has no marked node
and then gets one (two nodes, one marked).

Every Ray test checks that what it started listens on loopback only and is gone afterwards. Rough costs on a quiet
2-core machine: embedded connect ~3 s, a one-node cluster ~4 s, adding a node ~2 s (tests/ray_cluster.py).
"""

from __future__ import annotations

import os
import time

import pytest
from archdsl.search import cluster
from archdsl.search.cluster import ClusterError
from ray_cluster import LoopbackCluster, alive, descendants, is_loopback, listening_sockets

try:
    import ray
except ImportError:  # the `search` extra is not installed: only the tests without Ray run
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="needs ray (pip install archdsl[search])")


def _where_fn():
    """A function (node id, start, end) = f(seconds) that sleeps. Nested, so Ray ships it by value: the workers
    cannot import this test module."""

    def where(seconds: float) -> tuple[str, float, float]:
        start = time.time()
        time.sleep(seconds)
        return ray.get_runtime_context().get_node_id(), start, time.time()

    return where


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """The pids of `pids` still alive (not zombies) after waiting up to `timeout` s for them to exit."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


def _assert_loopback_only(pids: set[int]) -> list[tuple[int, str, int]]:
    socks = listening_sockets(pids)
    exposed = [s for s in socks if not is_loopback(s[1])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    return socks


# -- no Ray needed ----------------------------------------------------------------------------------------------


def test_latency_options_and_label_flag():
    opts = cluster.latency_task_options("gpu-box")
    assert opts == {"resources": {"gpu-box": 1}, "num_cpus": 0, "scheduling_strategy": "DEFAULT"}
    assert cluster.label_flag() == "--resources='{\"archdsl-target\": 1}'"
    env = cluster.ray_environment("/tmp/x")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_AUTH_MODE"] == "disabled" and env["RAY_TMPDIR"] == "/tmp/x"


def test_short_temp_dir(tmp_path):
    long_dir = tmp_path / ("w" * 60) / "ray"
    short = cluster.short_temp_dir(long_dir)
    assert len(str(short)) <= cluster.MAX_TEMP_DIR_CHARS and short.resolve() == long_dir.resolve()
    (short / "f").write_text("x")
    assert (long_dir / "f").read_text() == "x"
    assert cluster.short_temp_dir(long_dir) == short  # the same temp dir: the same link (a resumed run)
    other = cluster.short_temp_dir(tmp_path / ("v" * 60))
    assert other != short and other.resolve() == (tmp_path / ("v" * 60)).resolve()
    cluster.remove_short_temp_dir(short)
    cluster.remove_short_temp_dir(other)
    assert not short.parent.exists() and not other.parent.exists() and (long_dir / "f").exists()
    cluster.remove_short_temp_dir(long_dir)  # not a link of ours: left alone
    assert long_dir.exists()


# -- embedded Ray ----------------------------------------------------------------------------------------------


@needs_ray
def test_embedded_connect(tmp_path):
    from ray._private import ray_constants
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    temp = tmp_path / "work" / "ray"  # longer than MAX_TEMP_DIR_CHARS: Ray gets the short symlink
    env_before = {k: os.environ.get(k) for k in cluster.ray_environment("unused")}
    cached_before = ray_constants.ENABLE_RAY_CLUSTER  # True here unless the shell set the variable: Ray came first
    before = descendants(os.getpid())
    info = cluster.connect(None, temp_dir=temp, num_cpus=1)
    short = cluster._CONNECTION.short_dir
    started: set[int] = set()
    try:
        assert info.local and info.cpus == 1
        (node,) = info.nodes
        assert node.is_target and node.is_head and node.ip == "127.0.0.1"
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        where = ray.remote(_where_fn())
        assert ray.get(where.options(**cluster.latency_task_options()).remote(0.0))[0] == node.node_id

        # A Tune trial runs in a placement group that captures its child tasks; the measurement must get out.
        pg = placement_group([{"CPU": 1}])
        ray.get(pg.ready())

        def trial(opts, where):
            return ray.get(ray.remote(where).options(**opts).remote(0.0))[0]

        in_pg = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        trial_task = ray.remote(trial).options(num_cpus=1, scheduling_strategy=in_pg)
        assert ray.get(trial_task.remote(cluster.latency_task_options(), _where_fn()), timeout=60) == node.node_id
        remove_placement_group(pg)

        started = descendants(os.getpid()) - before
        socks = _assert_loopback_only(started | {os.getpid()})
        assert {p for p, _, _ in socks} - {os.getpid()}, "no Ray process found listening"
    finally:
        cluster.shutdown()
    assert not ray.is_initialized()
    assert not _wait_gone(started), "Ray processes left after shutdown()"
    assert not short.exists() and any(temp.glob("session_*/logs"))
    assert {k: os.environ.get(k) for k in env_before} == env_before
    assert ray_constants.ENABLE_RAY_CLUSTER == cached_before
    cluster.shutdown()  # a second call: nothing left to undo


# -- an existing cluster ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    """get() -> the module's loopback cluster: an unmarked head, until test_two_node_loopback_cluster adds a marked
    node and stops it. One cluster start serves both tests, in any order."""
    holder: dict[str, LoopbackCluster] = {}

    def get(unmarked: bool) -> LoopbackCluster:
        c = holder.get("c")
        if c is not None and c.running and unmarked and any(c.targets):
            c.stop()
        if c is None or not c.running:
            c = holder["c"] = LoopbackCluster(tmp_path_factory.mktemp("cluster"), targets=(False,)).start()
        return c

    yield get
    if "c" in holder:
        holder["c"].stop()


@needs_ray
@pytest.mark.slow
def test_connect_without_target_node(loopback):
    c = loopback(unmarked=True)
    with pytest.raises(ClusterError) as err:
        cluster.connect(c.address, temp_dir=c.workdir / "driver")
    assert not ray.is_initialized() and cluster._CONNECTION is None
    msg = str(err.value)
    assert "'archdsl-target'" in msg and "--resources='{\"archdsl-target\": 1}'" in msg and c.address in msg


@needs_ray
@pytest.mark.slow
def test_two_node_loopback_cluster(loopback, record_property):
    c = loopback(unmarked=False)
    record_property("cluster_startup_s", round(c.startup_s, 2))
    record_property("add_node_s", round(c.add_node(target=True), 2))
    info = cluster.connect(c.address, temp_dir=c.workdir / "driver")
    try:
        assert not info.local and len(info.nodes) == 2
        (target,) = info.target_nodes
        assert not target.is_head and {n.ip for n in info.nodes} == {"127.0.0.1"}

        plain = ray.remote(num_cpus=1)(_where_fn())
        ran_on = {r[0] for r in ray.get([plain.remote(0.5) for _ in range(6)], timeout=60)}
        assert ran_on == {n.node_id for n in info.nodes}

        measured = ray.get([plain.options(**cluster.latency_task_options()).remote(0.2) for _ in range(4)],
                           timeout=60)
        assert {m[0] for m in measured} == {target.node_id}
        spans = sorted((m[1], m[2]) for m in measured)
        assert all(a_end <= b_start + 0.01 for (_, a_end), (b_start, _) in zip(spans, spans[1:])), \
            f"latency tasks overlapped on the target node: {spans}"

        socks = _assert_loopback_only(c.pids() | {os.getpid()})
        assert len({p for p, _, _ in socks}) >= 5  # GCS, 2 raylets, workers, this driver
    finally:
        cluster.shutdown()
    pids = c.stop()
    assert len(pids) > 4 and not _wait_gone(pids, timeout=2), "cluster processes left after stop()"
    assert not (c.workdir / "ray-cluster").exists()
