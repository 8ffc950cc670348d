"""pyroute2's rtnetlink core, without the rest of pyroute2.

`import pyroute2` runs a package __init__ that eagerly imports every part of
the library (NDB, IPDB, nftables, wireless, IPVS, ...): about 160 modules and
5 MB of resident memory that the agent, with its < 80 MB budget, never uses.
Importing `pyroute2.iproute.linux` alone would still run that __init__, so the
package is first registered as an empty shell (its real module object, not
yet executed) that runs the real __init__ the first time anyone asks it for a
name that is not a submodule. Code that does `from pyroute2 import NDB` later
still gets the whole library; only what is never used is never loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any


def _defer_package_init(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return  # not installed: the import below reports it
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        del module.__dict__["__getattr__"]  # run the real __init__, once
        loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


_defer_package_init("pyroute2")

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPRoute", "NetlinkError"]
