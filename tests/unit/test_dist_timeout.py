"""--dist-timeout: the group's collectives time out after it, and the errors torch raises for a
dead or silent peer are told apart from this rank's own bugs (runner turns them into exit 75)."""

from __future__ import annotations

import datetime
import socket

import pytest

from distil_jobs.distributed import Rendezvous, destroy_process_group, init_process_group, lost_peer


@pytest.fixture()
def group(monkeypatch):
    """A real one-rank gloo group (world_size 2 in the rendezvous would wait for a peer)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    rdzv = Rendezvous("127.0.0.1", port, 1, 0, 1, 0, 0, "flags")
    monkeypatch.setattr(Rendezvous, "distributed", property(lambda self: True))
    init_process_group(rdzv, "gloo", timeout_s=7)
    yield dist
    destroy_process_group()


def test_collectives_wait_dist_timeout_and_storage_barriers_longer(group):
    import torch

    from distil_jobs import distributed

    def timeout(pg):
        return pg._get_backend(torch.device("cpu")).options._timeout

    assert timeout(group.group.WORLD) == datetime.timedelta(seconds=7)
    # A rank uploading a checkpoint or the model is not a lost peer: those barriers wait for the join timeout.
    assert timeout(distributed._io_group) == datetime.timedelta(minutes=30)
    distributed.io_barrier()


def test_errors_of_a_lost_peer_are_recognised(group):
    closed = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                          "[127.0.0.1]:28557. This is typically caused by a remote worker crashing.")
    timed_out = RuntimeError("[third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                             "10000ms for recv operation to complete")
    assert lost_peer(closed) and lost_peer(timed_out)
    assert lost_peer(group.DistBackendError("NCCL communicator was aborted on rank 1"))
    assert not lost_peer(ValueError("a bug of this rank")) and not lost_peer(RuntimeError("shape mismatch"))


def test_without_a_group_nothing_is_a_lost_peer():
    assert not lost_peer(RuntimeError("Connection closed by peer"))
