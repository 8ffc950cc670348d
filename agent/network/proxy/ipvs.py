"""IPVS mode: detecting whether the kernel can do it at all.

The IPVS proxier (virtual servers through pyroute2, a dummy interface holding
the ClusterIPs, iptables only for masquerade) needs the ip_vs module, which
many kernels, including the ones these machines run (CONFIG_IP_VS unset), do
not have. The mode is refused at start with a message that says why and what
to use instead, not left to fail on the first Service.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class ProxyModeUnavailable(Exception):
    """The requested proxy mode cannot run on this node."""


NO_MODULE = (
    "IPVS mode needs the ip_vs kernel module, which this kernel lacks "
    "(CONFIG_IP_VS unset); use --proxy-mode iptables"
)
NOT_BUILT = (
    "this kernel has IPVS, but this agent does not implement the IPVS proxier yet; "
    "use --proxy-mode iptables"
)


def kernel_has_ipvs(proc: Path = Path("/proc")) -> bool:
    """/proc/net/ip_vs appears once ip_vs is loaded; try loading it once."""
    if (proc / "net" / "ip_vs").exists():
        return True
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return False
    subprocess.run(
        [modprobe, "ip_vs"], capture_output=True, timeout=10, check=False
    )  # its failure is the answer, read from /proc below
    return (proc / "net" / "ip_vs").exists()


def check_ipvs(proc: Path = Path("/proc")) -> None:
    """Raise ProxyModeUnavailable with the reason IPVS mode cannot run here."""
    if not kernel_has_ipvs(proc):
        raise ProxyModeUnavailable(NO_MODULE)
    raise ProxyModeUnavailable(NOT_BUILT)
