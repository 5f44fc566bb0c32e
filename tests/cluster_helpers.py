"""A throwaway Redis Cluster of real ``redis-server`` processes on loopback ports.

Debian's ``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster create``,
as an operator builds one. Cluster mode keeps state in ``nodes.conf`` per node, so each node has
a directory of its own. ``cluster-node-timeout`` is short so a failover test promotes a replica
within a couple of seconds (production clusters use the default 15 s).
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

NODE_TIMEOUT_MS = 1000
# REDIS_URL with this mark is a cluster seed (broker/store/clients.py); make_settings maps it to
# REDIS_CLUSTER=true plus the queue Redis registered here for the seed.
QUEUE_URLS: dict[str, str] = {}


@dataclass
class Node:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def seed_url(self) -> str:
        """REDIS_URL marked as a cluster seed (what the broker's clients open)."""
        return f"redis+cluster://{self.nodes[0].address}/0"

    @property
    def plain_seed(self) -> str:
        return f"redis://{self.nodes[0].address}/0"

    def masters(self) -> dict[str, list[tuple[int, int]]]:
        """address -> slot ranges it serves now."""
        found: dict[str, list[tuple[int, int]]] = {}
        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            try:
                slots = node.client().cluster("slots")
            except redis.RedisError:
                continue
            for start, end, master, *_ in slots:
                found.setdefault(f"{master[0]}:{master[1]}", []).append((start, end))
            return found
        return found

    def node_of_slot(self, slot: int) -> Node:
        for address, ranges in self.masters().items():
            if any(start <= slot <= end for start, end in ranges):
                return next(n for n in self.nodes if n.address == address)
        raise LookupError(f"no master serves slot {slot}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and all 16384 slots have a master."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                live = [n for n in self.nodes if n.proc.poll() is None]
                if all(n.client().cluster("info")["cluster_state"] == "ok" for n in live):
                    covered = sum(end - start + 1 for r in self.masters().values() for start, end in r)
                    if covered == 16384:
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy; see the nodes' redis.log")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.kill()
        for node in self.nodes:
            node.proc.wait(10)


def _cluster_port() -> int:
    """A port whose cluster bus port (port + 10000) is free too; both must be below 65536."""
    while True:
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _start_node(directory: Path, port: int, appendonly: bool) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    command += ["--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec"]
    command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    command += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--logfile", str(directory / "redis.log")]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = Node(port, directory, proc)
    deadline = time.monotonic() + 10
    while True:
        try:
            node.client().ping()
            return node
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}") from None
            time.sleep(0.05)


def start_cluster(root: Path, masters: int = 3, replicas: int = 0, appendonly: bool = False) -> Cluster:
    """Start ``masters * (1 + replicas)`` nodes and join them into one cluster."""
    cluster = Cluster()
    try:
        for i in range(masters * (1 + replicas)):
            port = _cluster_port()
            cluster.nodes.append(_start_node(root / f"node{i}", port, appendonly))
        addresses = [n.address for n in cluster.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_healthy()
        if replicas:
            _wait_replicas_linked(cluster, masters * replicas)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_replicas_linked(cluster: Cluster, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        linked = 0
        for node in cluster.nodes:
            info = node.client().info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                linked += 1
        if linked >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {linked} of {expected} replicas linked to their masters")
        time.sleep(0.1)
