"""Services on a real local cluster: ClusterIP balancing across nodes, hairpin,
NodePort from the LAN, REJECT without endpoints, cluster DNS from pods, and
zero failed requests while a Deployment rolls and scales down.

Requests are made from a client pod by one `orchctl exec` whose shell loop
does them all (an exec costs about half a second) and prints what it saw.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, ConflictError
from tests.e2e.conftest import LocalCluster, wait_for
from tests.e2e.test_pods import orchctl, pod, running, sleeper

pytestmark = pytest.mark.e2e

# Each pod's httpd serves its own hostname (= the pod name) and, like a real
# server, goes away at once on SIGTERM (busybox httpd as PID 1 would ignore it
# and serve on through the whole grace period, hiding a kill that comes early).
SERVE_HOSTNAME = (
    "mkdir -p /www && hostname > /www/index.html && "
    "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
)


def web_container(script: str = SERVE_HOSTNAME, **extra: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "image": "busybox:1.36",
        "command": ["sh", "-c", script],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        **extra,
    }


def deployment(name: str, ns: str, replicas: int, container: dict[str, Any]) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [container],
                        "terminationGracePeriodSeconds": 5,
                        # One pod per node before any node gets a second.
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": {"matchLabels": {"app": name}},
                            }
                        ],
                    },
                },
            },
        }
    )


def service(name: str, ns: str, selector: dict[str, str], **spec: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                **spec,
            },
        }
    )


def sh(
    cluster: LocalCluster, ns: str, pod_name: str, script: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return orchctl(cluster, "exec", "-n", ns, pod_name, "--", "sh", "-c", script, timeout=timeout)


async def ready_pods(client: Client, ns: str, app: str) -> list[Any]:
    pods = (await client.list("Pod", ns, label_selector=f"app={app}")).items
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and p.status.pod_ip
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
    ]


async def endpoint_ips(client: Client, ns: str, name: str) -> set[str]:
    ep = await client.get("Endpoints", name, ns)
    return {a.ip for s in ep.subsets for a in s.addresses}


async def serving(client: Client, ns: str, name: str, replicas: int) -> list[Any]:
    """Until `replicas` pods of the Deployment are Ready and are exactly the
    Service's endpoint addresses; returns the pods."""

    async def check() -> list[Any] | None:
        pods = await ready_pods(client, ns, name)
        if len(pods) != replicas:
            return None
        ips = await endpoint_ips(client, ns, name)
        return pods if ips == {p.status.pod_ip for p in pods} else None

    pods: list[Any] = await wait_for(
        check, timeout=120, interval=1, what=f"{replicas} ready endpoints of {name}"
    )
    await asyncio.sleep(1)  # every node's proxy resyncs within min_sync_interval
    return pods


async def client_pod(
    cluster: LocalCluster, client: Client, ns: str, name: str = "client", **spec: Any
) -> Any:
    await client.create(pod(name, ns, cluster.node_name(1), [sleeper()], **spec))
    return await wait_for(lambda: running(client, name, ns), what=f"{name} running")


async def update_deployment(client: Client, ns: str, name: str, change: Any) -> None:
    for _ in range(10):
        d = await client.get("Deployment", name, ns)
        change(d)
        try:
            await client.update(d)
            return
        except ConflictError:
            continue
    raise AssertionError(f"could not update deployment {name}: conflicts")


def fetch_loop(url: str, count: int) -> str:
    """Shell: `count` requests, one line each: the backend's answer or FAIL."""
    return (
        f"i=0; while [ $i -lt {count} ]; do "
        f"timeout 5 wget -q -O - {url} 2>/dev/null || echo FAIL; i=$((i+1)); done"
    )


# -- 1. ClusterIP balancing over 6 pods on 3 nodes -------------------------------------------


async def test_cluster_ip_balances_over_pods_on_every_node(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(deployment("web", namespace, 6, web_container()))
    svc = await client.create(service("web", namespace, {"app": "web"}))
    await client_pod(local_cluster, client, namespace)
    pods = await serving(client, namespace, "web", 6)
    nodes = {p.spec.node_name for p in pods}
    assert nodes == {local_cluster.node_name(i) for i in range(1, local_cluster.layout.nodes + 1)}

    started = time.monotonic()
    out = sh(local_cluster, namespace, "client", fetch_loop(f"http://{svc.spec.cluster_ip}/", 600))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    answers = Counter(line.strip() for line in out.stdout.splitlines() if line.strip())
    assert sum(answers.values()) == 600, answers
    assert answers["FAIL"] == 0, answers
    names = {p.metadata.name for p in pods}
    assert set(answers) == names, f"answers from {set(answers)}, pods {names}"
    for name, n in answers.items():
        assert n >= 48, f"{name} got {n} of 600 requests (< 8%): {answers}"
    print(f"600 requests in {took:.1f}s: {dict(answers)}")


# -- 2. hairpin ----------------------------------------------------------------------------


async def test_pod_reaches_itself_through_its_service(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(pod("loner", namespace, local_cluster.node_name(2), [web_container()]))
    svc = await client.create(service("loner", namespace, {"app": "loner"}))

    async def only_endpoint() -> bool:
        p = await running(client, "loner", namespace)
        return bool(p) and await endpoint_ips(client, namespace, "loner") == {p.status.pod_ip}

    await wait_for(only_endpoint, timeout=60, what="loner as its Service's only endpoint")

    async def hairpin() -> bool:
        out = sh(
            local_cluster,
            namespace,
            "loner",
            f"timeout 5 wget -q -O - http://{svc.spec.cluster_ip}/",
        )
        return out.returncode == 0 and out.stdout.strip() == "loner"

    await wait_for(hairpin, timeout=20, interval=1, what="loner to reach itself via its ClusterIP")


# -- 3. NodePort from the LAN ----------------------------------------------------------------


def lan_fetch(cluster: LocalCluster, url: str) -> subprocess.CompletedProcess[str]:
    """An HTTP GET from the cluster's LAN namespace (outside every node)."""
    code = (
        "import sys, urllib.request\n"
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())\n"
    )
    return subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{cluster.layout.lan_netns}",
            sys.executable,
            "-c",
            code,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_node_port_answers_on_every_node_from_the_lan(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # One backend, so most nodes must forward across the overlay.
    await client.create(deployment("np", namespace, 1, web_container()))
    svc = await client.create(service("np", namespace, {"app": "np"}, type="NodePort"))
    node_port = svc.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767
    (backend,) = await serving(client, namespace, "np", 1)
    for node in local_cluster.layout.all_nodes():
        url = f"http://{node.ip}:{node_port}/"

        async def answered(url: str = url) -> bool:
            out = await asyncio.to_thread(lan_fetch, local_cluster, url)
            return out.returncode == 0 and out.stdout.strip() == backend.metadata.name

        await wait_for(answered, timeout=20, interval=1, what=f"NodePort {url} from the LAN")


async def test_host_port_answers_on_its_node_from_the_lan(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # A hostPort is published on the pod's own node only (CNI portmap's model).
    host_port = 28080  # outside the NodePort range, so no Service can take it
    container = web_container()
    container["ports"] = [{"name": "http", "containerPort": 8080, "hostPort": host_port}]
    await client.create(deployment("hp", namespace, 1, container))
    (pod,) = await wait_for(
        lambda: ready_pods(client, namespace, "hp"), timeout=120, what="the hostPort pod ready"
    )
    url = f"http://{pod.status.host_ip}:{host_port}/"

    async def answered() -> bool:
        out = await asyncio.to_thread(lan_fetch, local_cluster, url)
        return out.returncode == 0 and out.stdout.strip() == pod.metadata.name

    await wait_for(answered, timeout=20, interval=1, what=f"hostPort {url} from the LAN")
    events = await client.list("Event", namespace)
    assert "HostPortNotSupported" not in {e.reason for e in events.items}

    # Gone with the pod: scaled to zero, the port no longer answers.
    await client.delete("Deployment", "hp", namespace)

    async def closed() -> bool:
        return (await asyncio.to_thread(lan_fetch, local_cluster, url)).returncode != 0

    await wait_for(closed, timeout=60, interval=1, what=f"hostPort {url} closed")


# -- 4. a Service without endpoints refuses ----------------------------------------------------


async def test_service_without_endpoints_refuses_at_once(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    svc = await client.create(service("empty", namespace, {"app": "nobody"}))
    await client_pod(local_cluster, client, namespace)
    await asyncio.sleep(1)  # the proxies' rules for the new Service
    ip = svc.spec.cluster_ip
    # Timed inside the pod (busybox `time`): an exec's own cost varies with load.
    script = (
        f"time -f took=%e timeout 5 wget -q -O - http://{ip}/; echo rc=$?; "
        f"time -f took=%e timeout 5 nc {ip} 80 </dev/null; echo nc=$?"
    )
    out = sh(local_cluster, namespace, "client", script)
    text = out.stdout + out.stderr
    assert text.lower().count("connection refused") == 2, text
    assert "rc=1" in text and "nc=1" in text, text  # `timeout` would have made them 143
    took = [float(t) for t in re.findall(r"took=([0-9.]+)", text)]
    assert len(took) == 2 and max(took) < 1.5, f"a refusal, not a timeout: {text}"


# -- 5. cluster DNS from pods ----------------------------------------------------------------


def statefulset(name: str, ns: str, service_name: str, replicas: int) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "serviceName": service_name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [web_container()], "terminationGracePeriodSeconds": 5},
                },
            },
        }
    )


async def test_cluster_dns_from_pods(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    ns = namespace
    zone = f"{ns}.svc.cluster.local"
    await client.create(deployment("web", ns, 1, web_container()))
    web = await client.create(service("web", ns, {"app": "web"}))
    await client.create(service("db", ns, {"app": "db"}, clusterIP="None"))
    await client.create(statefulset("db", ns, "db", 2))
    await client_pod(local_cluster, client, ns)
    db_pods = await serving(client, ns, "db", 2)
    db_ips = {p.metadata.name: p.status.pod_ip for p in db_pods}
    assert set(db_ips) == {"db-0", "db-1"}

    script = "; ".join(
        [
            f"echo '== fqdn'; nslookup web.{zone}",
            "echo '== short'; nslookup web",
            f"echo '== headless'; nslookup db.{zone}",
            f"echo '== pod'; nslookup db-0.db.{zone}",
            f"echo '== srv'; nslookup -type=SRV _http._tcp.web.{zone}",
            f"echo '== unknown'; nslookup nosuch.{zone}",
            "echo '== end'",
        ]
    )
    out = sh(local_cluster, ns, "client", script)
    sections: dict[str, str] = {}
    for chunk in out.stdout.split("== ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip()] = body
    assert "end" in sections, out.stdout + out.stderr
    print(out.stdout)

    def addresses(body: str) -> set[str]:
        # busybox prints the server first ("Server: 10.96.0.10", "Address: 10.96.0.10:53").
        lines = body.split("Name:", 1)[1] if "Name:" in body else ""
        return {
            line.split(":", 1)[1].strip()
            for line in lines.splitlines()
            if line.startswith("Address")
        }

    assert addresses(sections["fqdn"]) == {web.spec.cluster_ip}, sections["fqdn"]
    assert addresses(sections["short"]) == {web.spec.cluster_ip}, sections["short"]
    assert f"web.{zone}" in sections["short"], sections["short"]
    assert addresses(sections["headless"]) == set(db_ips.values()), sections["headless"]
    assert addresses(sections["pod"]) == {db_ips["db-0"]}, sections["pod"]
    srv = sections["srv"]
    assert f"_http._tcp.web.{zone}" in srv and f"80 web.{zone}" in srv, srv
    assert "NXDOMAIN" in sections["unknown"], sections["unknown"]


# -- 6. zero downtime: rolling update and scale-down ------------------------------------------

LOAD = (
    # Waits for /tmp/go, then requests until /tmp/stop; records each answer
    # (a backend's name) or the failure with its time, then writes a summary.
    "while [ ! -f /tmp/go ]; do sleep 0.2; done; ok=0; fail=0; "
    "while [ ! -f /tmp/stop ]; do "
    "if timeout 2 wget -q -O - http://$TARGET/ >>/tmp/answers 2>/dev/null; "
    'then ok=$((ok+1)); else fail=$((fail+1)); echo "FAIL at $(date +%T)" >>/tmp/failures; fi; '
    'done; echo "ok=$ok fail=$fail" >/tmp/summary; sleep 3600'
)


async def test_zero_downtime_rolling_update_and_scale_down(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    ns = namespace
    await client.create(deployment("web", ns, 6, web_container()))
    svc = await client.create(service("web", ns, {"app": "web"}))
    loader = sleeper(
        command=["sh", "-c", LOAD], env=[{"name": "TARGET", "value": svc.spec.cluster_ip}]
    )
    await client.create(pod("load", ns, local_cluster.node_name(1), [loader]))
    await wait_for(lambda: running(client, "load", ns), what="load running")
    old = {p.metadata.name for p in await serving(client, ns, "web", 6)}
    assert sh(local_cluster, ns, "load", "touch /tmp/go").returncode == 0
    await asyncio.sleep(2)

    # (a) a rolling update. The new pods' httpd starts 3 s late: joining the
    # endpoints before the readiness probe passes would show as failures.
    slow = "sleep 3; " + SERVE_HOSTNAME

    def roll(d: Any) -> None:
        d.spec.template.spec.containers[0].command[:] = ["sh", "-c", slow]

    started = time.monotonic()
    await update_deployment(client, ns, "web", roll)

    async def rolled() -> bool:
        pods = (await client.list("Pod", ns, label_selector="app=web")).items
        names = {p.metadata.name for p in pods}
        return len(pods) == 6 and not names & old and len(await ready_pods(client, ns, "web")) == 6

    await wait_for(rolled, timeout=180, interval=1, what="the rolling update to finish")
    rolled_in = time.monotonic() - started
    new = {p.metadata.name for p in await serving(client, ns, "web", 6)}

    # (b) scale down from 6 to 2.
    started = time.monotonic()
    await update_deployment(client, ns, "web", lambda d: setattr(d.spec, "replicas", 2))

    async def scaled() -> bool:
        pods = (await client.list("Pod", ns, label_selector="app=web")).items
        return len(pods) == 2

    await wait_for(scaled, timeout=90, interval=1, what="the scale-down to finish")
    scaled_in = time.monotonic() - started
    survivors = {p.metadata.name for p in await serving(client, ns, "web", 2)}
    await asyncio.sleep(2)

    out = sh(
        local_cluster,
        ns,
        "load",
        "touch /tmp/stop; while [ ! -f /tmp/summary ]; do sleep 0.2; done; "
        "cat /tmp/summary; cat /tmp/failures 2>/dev/null; sort /tmp/answers | uniq -c",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    summary = dict(kv.split("=") for kv in lines[0].split())
    answered = Counter({ln.split()[1]: int(ln.split()[0]) for ln in lines if ln[:1] == " "})
    print(
        f"rolled in {rolled_in:.1f}s, scaled down in {scaled_in:.1f}s; {lines[0]}; "
        f"by backend: {dict(answered)}"
    )
    assert int(summary["fail"]) == 0, out.stdout
    assert int(summary["ok"]) > 100, out.stdout
    assert set(answered) & old and set(answered) & new, "traffic before and after the update"
    assert survivors <= new
