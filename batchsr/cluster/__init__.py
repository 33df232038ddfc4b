"""Scale-out: one run across the nodes of a Ray cluster (``run.py --cluster``).

Each node runs batchsr's own pipeline (:mod:`batchsr.cluster.worker`); the driver
(:mod:`batchsr.cluster.driver`) hands out the inputs in chunks and owns the report, the
resume state and the merged log; :mod:`batchsr.cluster.connect` reaches Ray and pins a
cluster on this machine to loopback. Ray is imported only by ``connect``, on first use.
"""
