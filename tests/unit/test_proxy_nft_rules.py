"""nftables rendering: what each kind of Service port turns into, and the
transactions (full and incremental) that bring the table there."""

from __future__ import annotations

import pytest

from agent.network.proxy.model import Endpoint, ServicePort
from agent.network.proxy.nft_rules import (
    HAIRPIN,
    NO_EP_NODEPORTS,
    NO_EP_SERVICES,
    REJECT,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Existing,
    NftRenderer,
    affinity_set,
    build_transaction,
    describe_line,
    ext_chain,
    parse_existing,
    render_service_port,
    sep_chain,
    svc_chain,
)
from agent.network.proxy.nftables import parse_error

pytestmark = pytest.mark.unit

CIDR = "10.244.0.0/16"


def sp(name: str = "web", ip: str = "10.96.0.20", **kw: object) -> ServicePort:
    return ServicePort("default", name, "http", kw.pop("protocol", "TCP"), ip, 80, **kw)  # type: ignore[arg-type]


def eps(*last: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.244.1.{n}", 8080) for n in last)


def test_chain_names_are_stable_readable_and_distinct() -> None:
    a, b = sp("web"), sp("api")
    assert svc_chain(a) == svc_chain(sp("web"))
    assert svc_chain(a) != svc_chain(b)
    assert svc_chain(a).startswith("svc-") and svc_chain(a).endswith("-default/web/tcp/http")
    assert ext_chain(a).startswith("ext-")
    assert sep_chain(a, eps(1)[0]).endswith("__10.244.1.1/8080")
    # a longer affinity timeout is another set (a set's timeout is fixed)
    assert affinity_set(sp(affinity_timeout=10), eps(1)[0]) != affinity_set(
        sp(affinity_timeout=20), eps(1)[0]
    )


def test_endpoints_are_a_uniform_ladder_of_dnats() -> None:
    out = render_service_port(sp(), eps(1, 2, 3), CIDR)
    svc = svc_chain(sp())
    assert out.chains == {
        svc: [
            f"ip saddr != {CIDR} jump mark-for-masquerade",
            "numgen random mod 3 0 meta l4proto tcp dnat to 10.244.1.1:8080",
            "numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.2:8080",
            "meta l4proto tcp dnat to 10.244.1.3:8080",
        ]
    }
    assert out.elements == {SERVICE_IPS: {"10.96.0.20 . tcp . 80": f"goto {svc}"}}
    assert list(out.hairpin) == [f"10.244.1.{n} . 10.244.1.{n}" for n in (1, 2, 3)]
    assert out.sets == {}


def test_no_endpoints_rejects_cluster_ip_and_node_port() -> None:
    out = render_service_port(sp(node_port=30080, protocol="UDP"), (), CIDR)
    assert out.chains == {}
    assert out.elements == {
        NO_EP_SERVICES: {"10.96.0.20 . udp . 80": f"goto {REJECT}"},
        NO_EP_NODEPORTS: {"udp . 30080": f"goto {REJECT}"},
    }


def test_node_port_marks_for_masquerade_then_joins_the_service_chain() -> None:
    s = sp(node_port=30080)
    out = render_service_port(s, eps(1), CIDR)
    assert out.elements[SERVICE_NODEPORTS] == {"tcp . 30080": f"goto {ext_chain(s)}"}
    assert out.chains[ext_chain(s)] == ["jump mark-for-masquerade", f"goto {svc_chain(s)}"]


def test_affinity_checks_each_endpoints_set_before_choosing() -> None:
    s = sp(affinity_timeout=60)
    a, b = eps(1, 2)
    out = render_service_port(s, (a, b), CIDR)
    sa, sb = sep_chain(s, a), sep_chain(s, b)
    assert out.chains[svc_chain(s)] == [
        f"ip saddr != {CIDR} jump mark-for-masquerade",
        f"ip saddr @{affinity_set(s, a)} goto {sa}",
        f"ip saddr @{affinity_set(s, b)} goto {sb}",
        f"numgen random mod 2 0 goto {sa}",
        f"goto {sb}",
    ]
    assert out.chains[sa] == [
        f"update @{affinity_set(s, a)} {{ ip saddr }}",
        "meta l4proto tcp dnat to 10.244.1.1:8080",
    ]
    assert out.sets[affinity_set(s, a)] == (
        "type ipv4_addr ; flags dynamic,timeout ; timeout 60s ;"
    )


def test_renderer_reuses_unchanged_ports_and_dedupes_hairpin() -> None:
    r = NftRenderer(CIDR)
    first = r.render({sp("a", "10.96.0.1"): eps(1, 2), sp("b", "10.96.0.2"): eps(2)})
    assert list(first.elements[HAIRPIN]) == ["10.244.1.1 . 10.244.1.1", "10.244.1.2 . 10.244.1.2"]
    second = r.render({sp("a", "10.96.0.1"): eps(1, 2), sp("b", "10.96.0.2"): eps(3)})
    name = svc_chain(sp("a", "10.96.0.1"))
    assert second.chains[name] is first.chains[name]  # reused, not re-rendered
    assert second.owners[name] == sp("a", "10.96.0.1")


def test_full_transaction_declares_everything_and_removes_stale() -> None:
    s = sp(affinity_timeout=30)
    rs = NftRenderer(CIDR).render({s: eps(1)})
    existing = Existing(
        chains=frozenset({svc_chain(s), "svc-GONE", "sep-GONE"}),
        sets=frozenset({"aff-GONE"}),
        table=True,
    )
    text, written = build_transaction(rs, None, existing)
    lines = text.splitlines()
    assert lines[0] == "add table ip orch-proxy"
    assert (
        "add chain ip orch-proxy nat-prerouting { type nat hook prerouting priority -100 ; }"
        in lines
    )
    assert written == len(rs.chains)
    # existing chains are flushed, not re-added; new ones added, not flushed
    assert f"flush chain ip orch-proxy {svc_chain(s)}" in lines
    assert f"add chain ip orch-proxy {svc_chain(s)}" not in lines
    assert f"add chain ip orch-proxy {sep_chain(s, eps(1)[0])}" in lines
    assert "flush map ip orch-proxy service-ips" in lines
    assert "flush set ip orch-proxy hairpin" in lines
    # stale: flushed first, then deleted; after every reference is gone
    i_flush = lines.index("flush chain ip orch-proxy sep-GONE")
    i_delete = lines.index("delete chain ip orch-proxy svc-GONE")
    assert i_flush < i_delete
    assert i_flush > max(i for i, x in enumerate(lines) if x.startswith("add element"))
    assert lines[-1] == "delete set ip orch-proxy aff-GONE"
    # a declared table's own affinity set keeps its contents: never flushed
    assert not any(x.startswith("flush set ip orch-proxy aff-") for x in lines)


def test_incremental_transaction_writes_only_the_difference() -> None:
    r = NftRenderer(CIDR)
    a, b = sp("a", "10.96.0.1"), sp("b", "10.96.0.2")
    before = r.render({a: eps(1, 2), b: eps(3)})
    after = r.render({a: eps(1), b: ()})
    text, written = build_transaction(after, before, Existing())
    lines = text.splitlines()
    assert written == 1
    assert "add table ip orch-proxy" not in lines
    assert f"flush chain ip orch-proxy {svc_chain(a)}" in lines
    assert (
        "delete element ip orch-proxy hairpin { 10.244.1.2 . 10.244.1.2, 10.244.1.3 . 10.244.1.3 }"
        in lines
    )
    assert "delete element ip orch-proxy service-ips { 10.96.0.2 . tcp . 80 }" in lines
    assert (
        f"add element ip orch-proxy no-endpoint-services {{ 10.96.0.2 . tcp . 80 : goto {REJECT} }}"
        in lines
    )
    assert lines[-2:] == [
        f"flush chain ip orch-proxy {svc_chain(b)}",
        f"delete chain ip orch-proxy {svc_chain(b)}",
    ]
    # nothing changed: only the (few) fixed chains are rewritten
    text, written = build_transaction(after, after, Existing())
    assert written == 0 and "element" not in text and "svc-" not in text


def test_parse_existing_reads_only_our_table() -> None:
    chains = (
        "table ip orch-proxy {\n\tchain nat-output {\n\t\ttype nat hook output priority -100;"
        " policy accept;\n\t}\n\tchain svc-AAA-default/web/tcp/http {\n\t}\n"
        "\tchain sep-BBB {\n\t}\n}\n"
        "table ip other {\n\tchain svc-NOTOURS {\n\t}\n}\n"
    )
    sets = (
        "table ip orch-proxy {\n\tset aff-CCC {\n\t\ttype ipv4_addr\n\t}\n\tset hairpin {\n\t}\n}\n"
    )
    got = parse_existing(chains, sets)
    assert got.chains == {"svc-AAA-default/web/tcp/http", "sep-BBB"}
    assert got.sets == {"aff-CCC"} and got.table
    assert not parse_existing("", "").table


def test_errors_name_the_line_and_its_service() -> None:
    text = "add table ip orch-proxy\nadd rule ip orch-proxy svc-X tcp dport 1 bogus\n"
    stderr = (
        "/dev/stdin:2:44-48: Error: syntax error, unexpected string\n"
        "add rule ip orch-proxy svc-X tcp dport 1 bogus\n"
    )
    err = parse_error(stderr, text)
    assert err.line_no == 2 and err.line.endswith("bogus")
    assert "syntax error" in err.message
    assert describe_line(err.line, {"svc-X": sp()}) == "Service default/web port default/web:http"
    assert parse_error("nft: command not found", text).line_no == 0
