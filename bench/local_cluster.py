"""A local multi-node Ray cluster of logical GPUs for the bench scripts (``ray.cluster_utils``).

Everything lives under a private temp dir whose path stays short (Ray's socket paths must
stay under 107 bytes) and nothing lands in /tmp/ray: ``RAY_TMPDIR`` points there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from ray.cluster_utils import Cluster


@contextmanager
def local_cluster(prefix: str, nodes: int, gpus_per_node: int, cpus_per_node: int,
                  remove_temp: bool = True) -> Iterator[tuple[Cluster, Path]]:
    """A GPU-less head (the driver's node) and ``nodes`` worker nodes; yields the cluster and
    the temp dir, removed afterwards unless ``remove_temp`` is false (the caller keeps it for
    inspection or removes it). Ray and the cluster are shut down after."""
    temp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (temp / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(temp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "temp_dir": str(temp / "ray"),
        "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus_per_node)
        cluster.wait_for_nodes()
        yield cluster, temp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        if remove_temp:
            shutil.rmtree(temp, ignore_errors=True)
