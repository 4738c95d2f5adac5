"""Rendezvous resolution from real variable sets: torchrun, Slurm, Kubernetes Indexed Jobs, flags."""

from __future__ import annotations

import pytest

from distil_jobs.distributed import SPAWNED_ENV, expand_nodelist, resolve_rendezvous
from distil_jobs.errors import DistilError


def test_slurm_hostlists_expand_in_order():
    assert expand_nodelist("gpu[001-003,007],cpu5") == ["gpu001", "gpu002", "gpu003", "gpu007", "cpu5"]
    assert expand_nodelist("node[1-2]") == ["node1", "node2"]
    assert expand_nodelist("a-b-01") == ["a-b-01"]


def test_bad_hostlist_is_a_user_error():
    with pytest.raises(DistilError, match="SLURM_JOB_NODELIST"):
        expand_nodelist("gpu[003-001")


def test_single_process_without_any_launcher():
    r = resolve_rendezvous(env={})
    assert (r.rank, r.world_size, r.source, r.needs_spawn) == (0, 1, "single", False)


def test_torchrun_variables_place_the_process():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.7",
           "MASTER_PORT": "29400", "GROUP_RANK": "1"}
    r = resolve_rendezvous(env=env)
    assert (r.rank, r.local_rank, r.world_size, r.nnodes, r.node_rank) == (5, 1, 8, 2, 1)
    assert (r.master_addr, r.master_port, r.source) == ("10.0.0.7", 29400, "torchrun")
    assert r.env()["RANK"] == "5" and r.env()["WORLD_SIZE"] == "8"
    # torchrun's agent serves the store on its own MASTER_PORT: flags cannot move the master.
    r = resolve_rendezvous(master_addr="head", master_port=1234, env=env)
    assert (r.master_addr, r.master_port) == ("10.0.0.7", 29400)


def test_slurm_one_task_per_gpu():
    """`srun --nodes 5 --ntasks-per-node 2`: task 7 is the second task on the fourth node."""
    env = {"SLURM_JOB_ID": "12345", "SLURM_JOB_NODELIST": "gpu[001-003,007],cpu5", "SLURM_NNODES": "5",
           "SLURM_NTASKS": "10", "SLURM_PROCID": "7", "SLURM_LOCALID": "1", "SLURM_NODEID": "3",
           "SLURM_TASKS_PER_NODE": "2(x5)"}
    r = resolve_rendezvous(env=env)
    assert (r.rank, r.local_rank, r.node_rank, r.nnodes, r.nproc_per_node) == (7, 1, 3, 5, 2)
    assert r.master_addr == "gpu001"
    assert r.master_port == 10000 + 12345 % 20000  # per job: two jobs on one node do not collide
    assert r.source == "slurm" and not r.needs_spawn


def test_slurm_one_task_per_node_spawns_local_ranks():
    env = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
    r = resolve_rendezvous(nproc_per_node=None, env=env)
    assert (r.rank, r.world_size) == (1, 2)  # no GPUs here: one rank per task
    # With --nproc-per-node the flags win: this is node 1 of 2 and it starts 4 ranks itself.
    r = resolve_rendezvous(nproc_per_node=4, nnodes=2, node_rank=1, master_addr="node1", env=env)
    assert r.needs_spawn and r.world_size == 8 and r.for_local_rank(3).rank == 7


def test_slurm_single_task_job_with_master_port_set():
    env = {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "cpu5", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_NODEID": "0", "MASTER_PORT": "30001"}
    r = resolve_rendezvous(env=env)
    assert (r.world_size, r.master_addr, r.master_port) == (1, "cpu5", 30001)


def test_kubernetes_indexed_job_master_is_pod_zero_of_the_service():
    env = {"JOB_COMPLETION_INDEX": "2", "HOSTNAME": "distil-train-2", "POD_NAMESPACE": "ml"}
    r = resolve_rendezvous(nnodes=4, k8s_service="distil-train-svc", env=env)
    assert r.master_addr == "distil-train-0.distil-train-svc.ml.svc"
    assert (r.node_rank, r.nnodes, r.rank, r.world_size, r.source) == (2, 4, 2, 4, "k8s-indexed-job")
    r = resolve_rendezvous(nnodes=4, nproc_per_node=2, k8s_job="train", k8s_service="svc",
                           env={"JOB_COMPLETION_INDEX": "1"})
    assert r.master_addr == "train-0.svc" and r.needs_spawn and r.for_local_rank(1).rank == 3


def test_kubernetes_needs_node_count_and_service():
    with pytest.raises(DistilError, match="--nnodes"):
        resolve_rendezvous(env={"JOB_COMPLETION_INDEX": "0", "HOSTNAME": "t-0"})
    with pytest.raises(DistilError, match="--k8s-service"):
        resolve_rendezvous(nnodes=2, env={"JOB_COMPLETION_INDEX": "0", "HOSTNAME": "t-0"})


def test_flags_win_over_slurm_and_are_checked():
    slurm = {"SLURM_JOB_NODELIST": "gpu[1-4]", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"}
    r = resolve_rendezvous(master_addr="127.0.0.1", master_port=29999, nnodes=2, node_rank=1, env=slurm)
    assert (r.rank, r.world_size, r.master_port, r.source) == (1, 2, 29999, "flags")
    with pytest.raises(DistilError, match="--master-addr"):
        resolve_rendezvous(nnodes=2, node_rank=0, env={})
    with pytest.raises(DistilError, match="out of range"):
        resolve_rendezvous(nnodes=2, node_rank=2, master_addr="h", env={})


def test_spawned_ranks_read_their_place_from_the_environment():
    parent = resolve_rendezvous(nproc_per_node=2, env={})
    assert parent.needs_spawn
    child_env = parent.for_local_rank(1).env() | {SPAWNED_ENV: "123"}
    child = resolve_rendezvous(nproc_per_node=2, env=child_env)
    assert (child.rank, child.local_rank, child.world_size, child.source) == (1, 1, 2, "spawned")
