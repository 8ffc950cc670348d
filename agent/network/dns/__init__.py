"""Cluster DNS served on every node: Service, endpoint and pod names.

records: the name -> records table, built from Services, Endpoints and Pods
(no I/O, no DNS wire format). server: the UDP/TCP server that answers from a
table and forwards other names upstream. cluster: ClusterDNS, which feeds the
table from informers and serves it on the cluster DNS address.
"""
