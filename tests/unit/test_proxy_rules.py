"""The Service proxy's pure parts: API objects to values, values to rules,
rules to iptables-restore text, and restore errors back to their Service."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.network.proxy.conntrack import stale_udp_filters
from agent.network.proxy.iptables import failed_line
from agent.network.proxy.ipvs import NO_MODULE, ProxyModeUnavailable, check_ipvs
from agent.network.proxy.model import Endpoint, ServicePort, ready_endpoints, service_ports
from agent.network.proxy.rules import (
    EXTERNAL_SERVICES,
    FILTER,
    MARK_MASQ,
    NAT,
    NODEPORTS,
    SERVICES,
    Renderer,
    build_restore,
    describe_line,
    parse_own_chains,
    probability,
    render_service_port,
    sep_chain,
    svc_chain,
)
from orchestrator.api.pb import core_v1_pb2 as core

pytestmark = pytest.mark.unit

CLUSTER = "10.244.0.0/16"
WEB = ServicePort("default", "web", "http", "TCP", "10.96.0.20", 80)
EPS = (Endpoint("10.244.1.2", 8080), Endpoint("10.244.1.3", 8080), Endpoint("10.244.2.4", 8080))


def service(**spec: object) -> core.Service:
    return core.Service(metadata={"namespace": "default", "name": "web"}, spec=spec)


# -- model ------------------------------------------------------------------------


def test_service_ports_and_affinity_default() -> None:
    svc = service(
        cluster_ip="10.96.0.20",
        type="NodePort",
        session_affinity="ClientIP",
        ports=[
            {"name": "http", "port": 80, "node_port": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
    )
    http, dns = service_ports(svc)
    assert (http.protocol, http.node_port, http.affinity_timeout) == ("TCP", 30080, 10800)
    assert (dns.protocol, dns.port, str(dns)) == ("UDP", 53, "default/web:dns")


@pytest.mark.parametrize(
    "spec",
    [
        {"cluster_ip": "None", "ports": [{"port": 80}]},
        {"cluster_ip": "", "ports": [{"port": 80}]},
        {"type": "ExternalName", "external_name": "example.org", "ports": [{"port": 80}]},
    ],
)
def test_headless_and_external_name_services_get_no_ports(spec: dict[str, object]) -> None:
    assert service_ports(service(**spec)) == ()


def test_only_ready_addresses_are_endpoints() -> None:
    ep = core.Endpoints(
        subsets=[
            {
                "addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.1.2"}],
                "not_ready_addresses": [{"ip": "10.244.1.9"}],
                "ports": [{"name": "http", "port": 8080}],
            }
        ]
    )
    assert ready_endpoints(ep) == {
        ("http", "TCP"): (Endpoint("10.244.1.2", 8080), Endpoint("10.244.1.3", 8080))
    }


# -- one Service port ---------------------------------------------------------------


def test_probabilities_make_every_endpoint_equally_likely() -> None:
    assert [probability(i, 4) for i in range(3)] == ["0.2500000000", "0.3333333333", "0.5000000000"]
    rules = render_service_port(WEB, EPS, CLUSTER)
    svc = svc_chain(WEB)
    lines = rules.chains[svc]
    assert lines[0] == (
        f'-A {svc} -d 10.96.0.20/32 ! -s {CLUSTER} -m comment --comment "default/web:http '
        f'cluster IP" -p tcp -m tcp --dport 80 -j {MARK_MASQ}'
    )
    jumps = lines[1:]
    assert [j.split(" -j ")[1] for j in jumps] == [sep_chain(WEB, ep) for ep in EPS]
    assert "--probability 0.3333333333" in jumps[0]
    assert "--probability 0.5000000000" in jumps[1]
    assert "statistic" not in jumps[2]  # the last one takes whatever is left


def test_endpoint_chain_marks_hairpin_and_dnats() -> None:
    rules = render_service_port(WEB, EPS[:1], CLUSTER)
    sep = sep_chain(WEB, EPS[0])
    assert rules.chains[sep] == [
        f'-A {sep} -s 10.244.1.2/32 -m comment --comment "default/web:http" -j {MARK_MASQ}',
        f'-A {sep} -m comment --comment "default/web:http" -p tcp -m tcp '
        "-j DNAT --to-destination 10.244.1.2:8080",
    ]
    assert rules.nat_services == [
        '-A ORCH-SERVICES -d 10.96.0.20/32 -m comment --comment "default/web:http cluster IP" '
        f"-p tcp -m tcp --dport 80 -j {svc_chain(WEB)}"
    ]
    assert rules.filter_services == []


def test_session_affinity_uses_recent_per_endpoint() -> None:
    sp = ServicePort("default", "web", "http", "TCP", "10.96.0.20", 80, affinity_timeout=600)
    rules = render_service_port(sp, EPS[:2], CLUSTER)
    svc_lines = rules.chains[svc_chain(sp)]
    for ep, line in zip(EPS[:2], svc_lines[1:3], strict=True):
        sep = sep_chain(sp, ep)
        assert f"-m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}" in line
    for ep in EPS[:2]:
        sep = sep_chain(sp, ep)
        assert f"-m recent --name {sep} --set" in rules.chains[sep][1]


def test_no_endpoints_rejects_instead_of_hanging() -> None:
    sp = ServicePort("default", "web", "http", "TCP", "10.96.0.20", 80, node_port=30080)
    rules = render_service_port(sp, (), CLUSTER)
    assert rules.chains == {} and rules.nat_services == [] and rules.nat_nodeports == []
    assert rules.filter_services == [
        '-A ORCH-SERVICES -d 10.96.0.20/32 -m comment --comment "default/web:http has no '
        'endpoints" -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset'
    ]
    assert rules.filter_external[0].startswith(
        f"-A {EXTERNAL_SERVICES} -m addrtype --dst-type LOCAL"
    )
    assert "--dport 30080 -j REJECT" in rules.filter_external[0]


def test_node_port_is_masqueraded_then_balanced() -> None:
    sp = ServicePort("default", "web", "", "UDP", "10.96.0.20", 53, node_port=30053)
    rules = render_service_port(sp, EPS[:1], CLUSTER)
    svc = svc_chain(sp)
    assert rules.nat_nodeports == [
        f'-A {NODEPORTS} -m comment --comment "default/web:53 node port" -p udp -m udp '
        f"--dport 30053 -j {MARK_MASQ}",
        f'-A {NODEPORTS} -m comment --comment "default/web:53 node port" -p udp -m udp '
        f"--dport 30053 -j {svc}",
    ]


# -- the whole ruleset and its restore text ------------------------------------------


def test_nodeports_jump_is_last_and_masquerade_chain_is_complete() -> None:
    rs = Renderer(CLUSTER).render({WEB: EPS})
    nat = rs.tables[NAT]
    assert nat[SERVICES][-1].endswith("-m addrtype --dst-type LOCAL -j ORCH-NODEPORTS")
    assert nat[MARK_MASQ] == [f"-A {MARK_MASQ} -j MARK --or-mark 0x4000"]
    assert nat["ORCH-PROXY-POSTROUTING"][-1].endswith("-j MASQUERADE --random-fully")
    assert rs.owners[svc_chain(WEB)] == WEB


def test_full_restore_writes_everything_and_deletes_stale_chains() -> None:
    rs = Renderer(CLUSTER).render({WEB: EPS})
    existing = {(NAT, "ORCH-SVC-OLDOLDOLDOLDOLDO"), (NAT, svc_chain(WEB))}
    text, written = build_restore(rs, None, existing)
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines.index("*filter") > lines.index("COMMIT")
    assert written == len(rs.tables[NAT]) + len(rs.tables[FILTER])
    # a stale chain is flushed (declared) and deleted within the same commit
    assert ":ORCH-SVC-OLDOLDOLDOLDOLDO - [0:0]" in lines
    assert lines[lines.index("COMMIT") - 1] == "-X ORCH-SVC-OLDOLDOLDOLDOLDO"
    assert f"-X {svc_chain(WEB)}" not in lines


def test_incremental_restore_writes_only_changed_chains() -> None:
    other = ServicePort("default", "api", "", "TCP", "10.96.0.21", 443)
    renderer = Renderer(CLUSTER)
    first = renderer.render({WEB: EPS, other: EPS[:1]})
    second = renderer.render({WEB: EPS[:2], other: EPS[:1]})  # EPS[2] went
    text, _ = build_restore(second, first, first.own_chains())
    declared = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    gone = sep_chain(WEB, EPS[2])
    assert declared == {
        SERVICES,
        NODEPORTS,
        MARK_MASQ,
        "ORCH-PROXY-POSTROUTING",  # nat top level
        EXTERNAL_SERVICES,
        "ORCH-PROXY-FORWARD",  # filter top level (+ SERVICES)
        svc_chain(WEB),  # its endpoint list changed
        gone,  # stale: flushed, then deleted
    }
    assert f"-X {gone}" in text
    assert svc_chain(other) not in declared and sep_chain(WEB, EPS[0]) not in declared
    # unchanged Service ports are not even re-rendered
    assert second.tables[NAT][svc_chain(other)] is first.tables[NAT][svc_chain(other)]


def test_parse_own_chains_ignores_others() -> None:
    saved = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:ORCH-POSTROUTING - [0:0]\n:ORCH-SVC-AAAA - [0:0]\n"
        ":ORCH-SEP-BBBB - [0:0]\n:DOCKER - [0:0]\nCOMMIT\n*filter\n:ORCH-FORWARD - [0:0]\nCOMMIT\n"
    )
    assert parse_own_chains(saved) == {(NAT, "ORCH-SVC-AAAA"), (NAT, "ORCH-SEP-BBBB")}


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stderr",
    [
        'iptables-restore v1.8.9: unknown option "--bogus"\nError occurred at line: 3\n',
        "iptables-restore: line 3 failed\n",
    ],
)
def test_restore_error_names_the_line_and_its_service(stderr: str) -> None:
    rs = Renderer(CLUSTER).render({WEB: EPS[:1]})
    sep = sep_chain(WEB, EPS[0])
    text = f"*nat\n:{sep} - [0:0]\n-A {sep} --bogus\nCOMMIT\n"
    n, line = failed_line(stderr, text)
    assert (n, line) == (3, f"-A {sep} --bogus")
    assert describe_line(line, rs.owners) == "Service default/web port default/web:http"
    assert describe_line('-A ORCH-SERVICES -m comment --comment "x/y:z" -j X', {}) == "x/y:z"
    assert failed_line("something else", text) == (0, "")


# -- conntrack ----------------------------------------------------------------------------


def test_udp_conntrack_flushed_for_gone_endpoints_and_first_endpoint() -> None:
    dns = ServicePort("kube-system", "dns", "dns", "UDP", "10.96.0.10", 53, node_port=30053)
    a, b = Endpoint("10.244.1.2", 53), Endpoint("10.244.1.3", 53)
    assert stale_udp_filters({dns: (a, b)}, {dns: (a,)}) == [
        ("-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.1.3"),
        ("-p", "udp", "--dport", "30053", "--dst-nat", "10.244.1.3"),
    ]
    assert stale_udp_filters({dns: ()}, {dns: (a,)}) == [
        ("-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53"),
        ("-p", "udp", "--orig-port-dst", "30053"),
    ]
    assert stale_udp_filters({WEB: EPS}, {WEB: ()}) == []  # TCP needs none


def test_ipvs_refused_with_reason_when_kernel_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)  # no modprobe either
    (tmp_path / "net").mkdir()
    with pytest.raises(ProxyModeUnavailable, match="ip_vs kernel module") as err:
        check_ipvs(tmp_path)
    assert str(err.value) == NO_MODULE
    (tmp_path / "net" / "ip_vs").write_text("")
    with pytest.raises(ProxyModeUnavailable, match="does not implement"):
        check_ipvs(tmp_path)
