"""The node's Service proxy (kube-proxy's iptables design; IPVS detected and refused).

Modules: model (API objects -> small values), rules (pure rendering),
iptables / conntrack (effects, behind interfaces), fake (their test doubles),
ipvs (mode detection), proxier (the informer-driven sync loop).
"""

from agent.network.proxy.ipvs import ProxyModeUnavailable
from agent.network.proxy.proxier import MODES, ServiceProxy

__all__ = ["MODES", "ProxyModeUnavailable", "ServiceProxy"]
