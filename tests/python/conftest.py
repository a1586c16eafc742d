"""Makes the helper module of this folder importable, in the test process and (through the
``sys.path`` that joblet passes on) in joblet's worker processes."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


# Dask clusters (loopback only), started once per test module that asks for them: two
# single-thread workers in this process, or in two worker processes. (Per module, not per
# session: their sockets and threads would otherwise live on through other modules' tests,
# which count this process's descriptors.)
import pytest  # noqa: E402


def _dask_client(processes):
    distributed = pytest.importorskip("distributed")
    # (In-process workers talk through in-memory comms; worker processes over loopback.)
    network = {"host": "127.0.0.1"} if processes else {}
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=processes,
        dashboard_address="127.0.0.1:0", **network
    )
    client = distributed.Client(cluster, set_as_default=False)
    return cluster, client


@pytest.fixture(scope="module")
def dask_threads_client():
    cluster, client = _dask_client(processes=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def dask_processes_client():
    cluster, client = _dask_client(processes=True)
    yield client
    client.close()
    cluster.close()
