"""Cluster DNS for real: the server in a "node" network namespace on
10.96.0.10:53 (a dummy interface), queried from a "pod" namespace wired to
the node by a veth, as a pod's traffic reaches its node.

The server runs in a child process entered into the node namespace (the agent
runs inside the node's namespace; a socket cannot be moved there afterwards),
fed by a fake API client. Namespaces are `tdns-<hex>`, created here and deleted
in teardown; the node namespace has no route out and no upstream is
configured, so no query can leave the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_SIDE = "10.244.9.1"
POD_IP = "10.244.9.2"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "nsenter", "busybox")),
        reason="needs ip, nsenter and busybox",
    ),
]


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}{out.stdout}")
    return out


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, check=check)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    tag = secrets.token_hex(3)
    node, client = f"tdns-{tag}-n", f"tdns-{tag}-c"
    made: list[str] = []
    try:
        for ns in (node, client):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "-n", node, "link", "set", "lo", "up")
        sh("ip", "-n", client, "link", "set", "lo", "up")
        sh("ip", "-n", node, "link", "add", "dnsveth0", "type", "veth",
           "peer", "name", "eth0", "netns", client)  # fmt: skip
        sh("ip", "-n", node, "addr", "add", f"{NODE_SIDE}/24", "dev", "dnsveth0")
        sh("ip", "-n", node, "link", "set", "dnsveth0", "up")
        sh("ip", "-n", client, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
        sh("ip", "-n", client, "link", "set", "eth0", "up")
        sh("ip", "-n", client, "route", "add", "default", "via", NODE_SIDE)
        yield node, client
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def dns_server(namespaces: tuple[str, str]) -> Iterator[tuple[str, str]]:
    node, _ = namespaces
    proc = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{node}", sys.executable, __file__, "serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"DNS server did not start: {line}{err}")
        yield namespaces
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def nslookup(ns: str, name: str, qtype: str = "") -> subprocess.CompletedProcess[str]:
    args = ["busybox", "nslookup"] + ([f"-type={qtype}"] if qtype else []) + [name, "10.96.0.10"]
    return in_ns(ns, *args, check=False)


def test_the_node_holds_the_cluster_dns_address(dns_server: tuple[str, str]) -> None:
    node, _ = dns_server
    links = json.loads(sh("ip", "-n", node, "-j", "-d", "addr", "show").stdout)
    holders = [
        (link["ifname"], link.get("linkinfo", {}).get("info_kind"), a["prefixlen"])
        for link in links
        for a in link["addr_info"]
        if a["local"] == "10.96.0.10"
    ]
    # The dummy interface, or lo on kernels without the dummy driver (this one).
    assert holders in ([("orch-dns", "dummy", 32)], [("lo", None, 32)]), holders


def test_pod_resolves_service_statefulset_and_srv_names(dns_server: tuple[str, str]) -> None:
    _, client = dns_server
    out = nslookup(client, "web.default.svc.cluster.local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10.96.0.20" in out.stdout
    out = nslookup(client, "db-0.db.default.svc.cluster.local")
    assert out.returncode == 0 and "10.244.1.5" in out.stdout, out.stdout
    out = nslookup(client, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert out.returncode == 0 and "db-0.db.default.svc.cluster.local" in out.stdout, out.stdout
    out = nslookup(client, "nope.default.svc.cluster.local")
    assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr, out.stdout


def test_pod_gets_a_truncated_answer_then_all_of_it_over_tcp(dns_server: tuple[str, str]) -> None:
    _, client = dns_server
    probe = (
        "import socket, struct\n"
        "from dnslib import DNSRecord\n"
        "q = DNSRecord.question('many.default.svc.cluster.local').pack()\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)\n"
        "u.sendto(q, ('10.96.0.10', 53)); r = DNSRecord.parse(u.recv(65535))\n"
        "t = socket.create_connection(('10.96.0.10', 53), timeout=3)\n"
        "t.sendall(struct.pack('!H', len(q)) + q); n = struct.unpack('!H', t.recv(2))[0]\n"
        "b = b''\n"
        "while len(b) < n: b += t.recv(n - len(b))\n"
        "print(r.header.tc, len(r.rr), len(DNSRecord.parse(b).rr))\n"
    )
    out = in_ns(client, sys.executable, "-c", probe)
    assert out.stdout.split() == ["1", "0", "60"]


def serve() -> None:
    """The child process: ClusterDNS on 10.96.0.10:53 in its namespace."""
    sys.path.insert(0, str(ROOT))
    from agent.network.dns.cluster import ClusterDNS
    from tests.unit.test_dns_cluster import FakeClient
    from tests.unit.test_dns_records import endpoints, service

    many = tuple((f"10.244.2.{i}", "") for i in range(1, 61))
    client = FakeClient(
        {
            "Service": [
                service("web"),
                service("db", cluster_ip="None", ports=(("pg", "TCP", 5432),)),
                service("many", cluster_ip="None"),
            ],
            "Endpoints": [
                endpoints("db", ready=(("10.244.1.5", "db-0"),), ports=(("pg", "TCP", 5432),)),
                endpoints("many", ready=many),
            ],
        }
    )

    async def run() -> None:
        dns = ClusterDNS(client, pod_records=False)
        await dns.start()
        await dns.wait_synced(10)
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await dns.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    serve()
