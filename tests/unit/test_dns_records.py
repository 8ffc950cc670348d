"""The cluster DNS record table: what each API object makes resolvable."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agent.network.dns.records import DNSTable, ip_from_reverse
from orchestrator.api.pb import core_v1_pb2 as core

pytestmark = pytest.mark.unit

Z = "cluster.local"


def service(
    name: str,
    ns: str = "default",
    *,
    cluster_ip: str = "10.96.0.20",
    ports: tuple[tuple[str, str, int], ...] = (("http", "TCP", 80),),
    type_: str = "ClusterIP",
    external_name: str = "",
    publish_not_ready: bool = False,
) -> Any:
    svc = core.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, ns
    svc.spec.type = type_
    svc.spec.cluster_ip = cluster_ip
    if cluster_ip:
        svc.spec.cluster_ips.append(cluster_ip)
    svc.spec.external_name = external_name
    svc.spec.publish_not_ready_addresses = publish_not_ready
    for pname, proto, port in ports:
        svc.spec.ports.add(name=pname, protocol=proto, port=port)
    return svc


def endpoints(
    name: str,
    ns: str = "default",
    *,
    ready: tuple[tuple[str, str], ...] = (),
    not_ready: tuple[tuple[str, str], ...] = (),
    ports: tuple[tuple[str, str, int], ...] = (("http", "TCP", 8080),),
) -> Any:
    ep = core.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, ns
    subset = ep.subsets.add()
    for ip, host in ready:
        subset.addresses.add(ip=ip, hostname=host)
    for ip, host in not_ready:
        subset.not_ready_addresses.add(ip=ip, hostname=host)
    for pname, proto, port in ports:
        subset.ports.add(name=pname, protocol=proto, port=port)
    return ep


def pod(name: str, ip: str, ns: str = "default", phase: str = "Running") -> Any:
    p = core.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, ns
    p.status.phase = phase
    p.status.pod_ip = ip
    p.status.pod_ips.add(ip=ip)
    return p


def values(table: DNSTable, name: str, qtype: str) -> list[str]:
    answer = table.lookup(name, qtype)
    assert answer is not None
    return sorted(r.value for r in answer.answers if r.rtype == qtype)


def rcode(table: DNSTable, name: str, qtype: str) -> str:
    answer = table.lookup(name, qtype)
    assert answer is not None
    return answer.rcode


def test_cluster_ip_service_a_srv_and_ptr() -> None:
    t = DNSTable(Z)
    t.set_service(service("web", ports=(("http", "TCP", 80), ("", "TCP", 81), ("dns", "UDP", 53))))
    assert values(t, "web.default.svc.cluster.local.", "A") == ["10.96.0.20"]
    srv = t.lookup("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert srv is not None and srv.authoritative
    assert [(r.priority, r.weight, r.port, r.value) for r in srv.answers] == [
        (0, 100, 80, "web.default.svc.cluster.local")
    ]
    # The SRV target's address rides along in the additional section.
    assert [r.value for r in srv.additional] == ["10.96.0.20"]
    assert values(t, "_dns._udp.web.default.svc.cluster.local", "SRV") == [
        "web.default.svc.cluster.local"
    ]
    # Unnamed ports have no SRV record; a port under the wrong protocol neither.
    assert rcode(t, "_http._udp.web.default.svc.cluster.local", "SRV") == "NXDOMAIN"
    assert values(t, "20.0.96.10.in-addr.arpa.", "PTR") == ["web.default.svc.cluster.local"]


def test_headless_service_endpoints_hostnames_srv_and_ptr() -> None:
    t = DNSTable(Z)
    t.set_service(service("db", cluster_ip="None", ports=(("pg", "TCP", 5432),)))
    t.set_endpoints(
        endpoints(
            "db",
            ready=(("10.244.1.5", "db-0"), ("10.244.2.6", "")),
            not_ready=(("10.244.3.7", "db-2"),),
            ports=(("pg", "TCP", 5433),),
        )
    )
    assert values(t, "db.default.svc.cluster.local", "A") == ["10.244.1.5", "10.244.2.6"]
    # StatefulSet pods: <hostname>.<subdomain>.<ns>.svc.<zone>.
    assert values(t, "db-0.db.default.svc.cluster.local", "A") == ["10.244.1.5"]
    # Endpoints without a hostname are named by their dashed IP, as in CoreDNS.
    assert values(t, "10-244-2-6.db.default.svc.cluster.local", "A") == ["10.244.2.6"]
    # Not ready: no records at all.
    assert rcode(t, "db-2.db.default.svc.cluster.local", "A") == "NXDOMAIN"
    srv = t.lookup("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert srv is not None
    assert sorted((r.weight, r.port, r.value) for r in srv.answers) == [
        (50, 5433, "10-244-2-6.db.default.svc.cluster.local"),
        (50, 5433, "db-0.db.default.svc.cluster.local"),
    ]
    assert sorted(r.value for r in srv.additional) == ["10.244.1.5", "10.244.2.6"]
    assert values(t, "5.1.244.10.in-addr.arpa", "PTR") == ["db-0.db.default.svc.cluster.local"]
    # A headless Service has no ClusterIP to point at.
    assert rcode(t, "7.3.244.10.in-addr.arpa", "PTR") == "NXDOMAIN"


def test_publish_not_ready_addresses_publishes_every_endpoint() -> None:
    t = DNSTable(Z)
    t.set_service(service("peers", cluster_ip="None", publish_not_ready=True))
    t.set_endpoints(
        endpoints("peers", ready=(("10.244.1.5", "p-0"),), not_ready=(("10.244.1.6", "p-1"),))
    )
    assert values(t, "peers.default.svc.cluster.local", "A") == ["10.244.1.5", "10.244.1.6"]
    assert values(t, "p-1.peers.default.svc.cluster.local", "A") == ["10.244.1.6"]


def test_headless_service_without_ready_endpoints_is_nodata() -> None:
    t = DNSTable(Z)
    t.set_service(service("db", cluster_ip="None"))
    answer = t.lookup("db.default.svc.cluster.local", "A")
    assert answer is not None
    assert (answer.rcode, answer.answers) == ("NOERROR", ())
    assert [r.rtype for r in answer.authority] == ["SOA"]


def test_endpoints_before_their_service_count_once_it_arrives() -> None:
    t = DNSTable(Z)
    t.set_endpoints(endpoints("db", ready=(("10.244.1.5", "db-0"),)))
    assert rcode(t, "db.default.svc.cluster.local", "A") == "NXDOMAIN"
    t.set_service(service("db", cluster_ip="None"))
    assert values(t, "db-0.db.default.svc.cluster.local", "A") == ["10.244.1.5"]


def test_external_name_is_a_cname_followed_inside_the_zone() -> None:
    t = DNSTable(Z)
    t.set_service(service("ext", type_="ExternalName", cluster_ip="", external_name="Example.COM."))
    answer = t.lookup("ext.default.svc.cluster.local", "A")
    assert answer is not None
    assert [(r.rtype, r.value) for r in answer.answers] == [("CNAME", "example.com")]
    assert answer.external_target == "example.com"
    t.set_service(service("web"))
    t.set_service(
        service(
            "alias",
            type_="ExternalName",
            cluster_ip="",
            external_name="web.default.svc.cluster.local",
        )
    )
    answer = t.lookup("alias.default.svc.cluster.local", "A")
    assert answer is not None and answer.external_target is None
    assert [(r.rtype, r.value) for r in answer.answers] == [
        ("CNAME", "web.default.svc.cluster.local"),
        ("A", "10.96.0.20"),
    ]
    assert values(t, "alias.default.svc.cluster.local", "CNAME") == [
        "web.default.svc.cluster.local"
    ]


def test_pod_records_exist_only_for_pods_with_that_ip_in_that_namespace() -> None:
    t = DNSTable(Z)
    t.set_pod(pod("a", "10.244.1.9", ns="team"))
    assert values(t, "10-244-1-9.team.pod.cluster.local", "A") == ["10.244.1.9"]
    assert rcode(t, "10-244-1-9.default.pod.cluster.local", "A") == "NXDOMAIN"
    assert rcode(t, "10-244-1-10.team.pod.cluster.local", "A") == "NXDOMAIN"
    t.set_pod(pod("a", "10.244.1.9", ns="team", phase="Succeeded"))
    assert rcode(t, "10-244-1-9.team.pod.cluster.local", "A") == "NXDOMAIN"


def test_two_pods_sharing_an_address_keep_the_name_until_both_are_gone() -> None:
    # hostNetwork pods all have the node's address.
    t = DNSTable(Z)
    t.set_pod(pod("a", "192.0.2.4"))
    t.set_pod(pod("b", "192.0.2.4"))
    assert values(t, "192-0-2-4.default.pod.cluster.local", "A") == ["192.0.2.4"]
    t.delete_pod("default", "a")
    assert values(t, "192-0-2-4.default.pod.cluster.local", "A") == ["192.0.2.4"]
    t.delete_pod("default", "b")
    assert rcode(t, "192-0-2-4.default.pod.cluster.local", "A") == "NXDOMAIN"


def test_nxdomain_versus_nodata() -> None:
    t = DNSTable(Z)
    t.set_service(service("web"))
    # Existing names, other types, and the names above them: NOERROR, empty.
    for name, qtype in [
        ("web.default.svc.cluster.local", "AAAA"),
        ("web.default.svc.cluster.local", "TXT"),
        ("default.svc.cluster.local", "A"),
        ("svc.cluster.local", "A"),
        ("_tcp.web.default.svc.cluster.local", "SRV"),
        ("cluster.local", "A"),
    ]:
        answer = t.lookup(name, qtype)
        assert answer is not None
        assert (answer.rcode, answer.answers, answer.authoritative) == ("NOERROR", (), True), name
        assert [r.rtype for r in answer.authority] == ["SOA"]
    for name in [
        "nope.default.svc.cluster.local",
        "web.other.svc.cluster.local",
        "web.default.svc.cluster.local.default.svc.cluster.local",  # a search-path try
        "x.web.default.svc.cluster.local",
        "other.cluster.local",
    ]:
        answer = t.lookup(name, "A")
        assert answer is not None
        assert answer.rcode == "NXDOMAIN", name
        assert [r.rtype for r in answer.authority] == ["SOA"]


def test_names_compare_case_insensitively() -> None:
    t = DNSTable(Z)
    t.set_service(service("web", ns="Team"))
    assert values(t, "WEB.team.SVC.Cluster.Local.", "A") == ["10.96.0.20"]


def test_apex_version_and_nameserver_records() -> None:
    t = DNSTable(Z, nameserver_ip="10.96.0.10")
    assert values(t, "dns-version.cluster.local", "TXT") == ["1.1.0"]
    assert values(t, "cluster.local", "SOA") == ["ns.dns.cluster.local"]
    ns = t.lookup("cluster.local", "NS")
    assert ns is not None
    assert [r.value for r in ns.answers] == ["ns.dns.cluster.local"]
    assert [r.value for r in ns.additional] == ["10.96.0.10"]


def test_names_outside_our_zones_are_not_ours() -> None:
    t = DNSTable(Z)
    assert t.lookup("example.com", "A") is None
    # A PTR outside the service and pod ranges belongs upstream too.
    assert t.lookup("1.2.0.192.in-addr.arpa", "PTR") is None
    assert t.lookup("10.in-addr.arpa", "PTR") is None
    answer = t.lookup("99.0.96.10.in-addr.arpa", "PTR")
    assert answer is not None and answer.rcode == "NXDOMAIN"


def test_reverse_name_parsing() -> None:
    assert str(ip_from_reverse("4.3.2.1.in-addr.arpa")) == "1.2.3.4"
    assert ip_from_reverse("300.3.2.1.in-addr.arpa") is None
    v6 = ".".join("1" + "0" * 31) + ".ip6.arpa"
    assert str(ip_from_reverse(v6)) == "::1"


def test_changes_and_deletes_remove_the_old_records() -> None:
    t = DNSTable(Z)
    t.set_service(service("db", cluster_ip="None", ports=(("pg", "TCP", 5432),)))
    t.set_endpoints(endpoints("db", ready=(("10.244.1.5", "db-0"),), ports=(("pg", "TCP", 5432),)))
    t.set_endpoints(endpoints("db", ready=(("10.244.1.8", "db-0"),), ports=(("pg", "TCP", 5432),)))
    assert values(t, "db-0.db.default.svc.cluster.local", "A") == ["10.244.1.8"]
    assert rcode(t, "5.1.244.10.in-addr.arpa", "PTR") == "NXDOMAIN"
    t.delete_endpoints("default", "db")
    assert rcode(t, "db-0.db.default.svc.cluster.local", "A") == "NXDOMAIN"
    assert rcode(t, "_pg._tcp.db.default.svc.cluster.local", "SRV") == "NXDOMAIN"
    assert rcode(t, "db.default.svc.cluster.local", "A") == "NOERROR"
    t.set_service(service("web", ns="solo"))
    t.delete_service("solo", "web")
    assert rcode(t, "web.solo.svc.cluster.local", "A") == "NXDOMAIN"
    assert rcode(t, "solo.svc.cluster.local", "A") == "NXDOMAIN"
    assert rcode(t, "20.0.96.10.in-addr.arpa", "PTR") == "NXDOMAIN"
    # Only the apex's own records are left.
    assert set(t._rrsets) == {"cluster.local", "dns-version.cluster.local", "ns.dns.cluster.local"}


def test_not_synced_answers_servfail_for_our_zones_only() -> None:
    t = DNSTable(Z, synced=False)
    answer = t.lookup("web.default.svc.cluster.local", "A")
    assert answer is not None and answer.rcode == "SERVFAIL"
    assert t.lookup("example.com", "A") is None


def test_other_domain() -> None:
    t = DNSTable("corp.internal")
    t.set_service(service("web"))
    assert values(t, "web.default.svc.corp.internal", "A") == ["10.96.0.20"]
    assert t.lookup("web.default.svc.cluster.local", "A") is None


def test_one_change_among_5000_services_is_cheap() -> None:
    t = DNSTable(Z)
    for i in range(5000):
        t.set_service(
            service(f"s{i}", ns=f"ns{i % 50}", cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}")
        )
    start = time.perf_counter()
    for i in range(200):
        t.set_service(service("s7", ns="ns7", cluster_ip=f"10.97.0.{i % 250 + 1}"))
    per_change = (time.perf_counter() - start) / 200
    assert per_change < 0.005, per_change
    assert values(t, "s7.ns7.svc.cluster.local", "A") == ["10.97.0.200"]
    assert values(t, "s4999.ns49.svc.cluster.local", "A") == ["10.96.19.250"]
