"""A kind-like cluster of real nodes on one Linux host.

Every node is a network namespace with its own dockerd and an agent that joined
with a bootstrap token, exactly as on a real host; the control plane runs
`orchestrator serve` in a namespace of its own; a bridge in a LAN namespace
joins them, and a local docker-registry on that LAN serves the images.

    from deploy.local import cluster
    cluster.up("dev", nodes=3)
    cluster.down("dev")

The control plane is driven as a process (`orchestrator init` / `serve`), never
imported: this package must not import the apiserver or the store.
"""
