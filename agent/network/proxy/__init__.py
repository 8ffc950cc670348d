"""The node's Service proxy (kube-proxy's iptables and nftables designs; IPVS
detected and refused).

Modules: model (API objects -> small values), rules / nft_rules (pure
rendering), iptables / nftables / conntrack (effects, behind interfaces), fake
(test doubles), ipvs (mode detection), proxier (the informer-driven sync loop).
"""

from agent.network.proxy.ipvs import ProxyModeUnavailable
from agent.network.proxy.proxier import MODES, ServiceProxy

__all__ = ["MODES", "ProxyModeUnavailable", "ServiceProxy"]
