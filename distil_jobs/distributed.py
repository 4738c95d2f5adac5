"""Rendezvous for multi-process training: who am I, how many are we, where is rank 0.

Resolved from, in order: explicit flags (`--master-addr --master-port --nnodes --node-rank
--nproc-per-node`, or their DISTIL_* env) > torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) > Slurm (SLURM_JOB_NODELIST, SLURM_NODEID, SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID) > a Kubernetes Indexed Job (JOB_COMPLETION_INDEX; rank 0 is pod `<job>-0` of the
headless service) > a single process.

When the resolved topology has several processes per node but nobody started them (flags, one
Slurm task per node, one pod per node), `spawn_local` starts them and waits.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

from distil_jobs.errors import DistilError, PreemptedError

DEFAULT_PORT = 29500
# Set in the ranks this module spawns, so they take their rank from the environment.
SPAWNED_ENV = "DISTIL_SPAWNED_BY"


@dataclasses.dataclass(frozen=True, slots=True)
class Rendezvous:
    master_addr: str
    master_port: int
    nnodes: int
    node_rank: int
    nproc_per_node: int
    # This process's global/local rank; None in a launcher that still has to spawn its ranks.
    rank: int | None
    local_rank: int | None
    source: str  # flags, torchrun, slurm, k8s-indexed-job, single

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def needs_spawn(self) -> bool:
        return self.rank is None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def for_local_rank(self, local_rank: int) -> Rendezvous:
        return dataclasses.replace(self, rank=self.node_rank * self.nproc_per_node + local_rank, local_rank=local_rank)

    def env(self) -> dict[str, str]:
        """torchrun-style variables for one rank (what DeepSpeed and torch.distributed read)."""
        assert self.rank is not None and self.local_rank is not None
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
                "LOCAL_WORLD_SIZE": str(self.nproc_per_node), "GROUP_RANK": str(self.node_rank),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}

    def describe(self) -> str:
        who = f"rank {self.rank}/{self.world_size} (local {self.local_rank})" if self.rank is not None \
            else f"launcher for {self.nproc_per_node} local rank(s)"
        return (f"rendezvous [{self.source}]: {who}, node {self.node_rank}/{self.nnodes}, "
                f"{self.nproc_per_node} proc/node, master {self.master_addr}:{self.master_port}")


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list (`gpu[001-003,007],cpu5`) as host names, in order."""
    try:
        import hostlist
    except ImportError:
        hostlist = None
    if hostlist is not None:
        try:
            return list(hostlist.expand_hostlist(nodelist))
        except hostlist.BadHostlist as e:
            raise DistilError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r} ({e})") from None
    try:  # no python-hostlist: ask Slurm itself
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        raise DistilError("cannot expand SLURM_JOB_NODELIST: pip install python-hostlist (or put scontrol on PATH)"
                          ) from None
    return out.stdout.split()


def _int(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    m = re.match(r"^\s*(\d+)", raw)  # SLURM_TASKS_PER_NODE looks like "2(x3)"
    if not m:
        raise DistilError(f"{name}={raw!r}: expected an integer")
    return int(m.group(1))


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def resolve_rendezvous(master_addr: str | None = None, master_port: int | None = None, nnodes: int | None = None,
                       node_rank: int | None = None, nproc_per_node: int | None = None,
                       k8s_job: str | None = None, k8s_service: str | None = None,
                       env: Mapping[str, str] | None = None) -> Rendezvous:
    env = os.environ if env is None else env
    port = master_port
    if env.get(SPAWNED_ENV) or ("RANK" in env and "WORLD_SIZE" in env):
        # torchrun (or our own spawner) already placed this process: its env is the truth, the
        # master too (torchrun's agent serves the store on its MASTER_PORT; flags cannot move it).
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else (nproc_per_node or world)
        rank = _int(env, "RANK")
        return Rendezvous(env.get("MASTER_ADDR", master_addr or "127.0.0.1"),
                          int(env.get("MASTER_PORT", port or DEFAULT_PORT)), max(1, world // local_world),
                          rank // local_world, local_world, rank, _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env
                          else rank % local_world, "spawned" if env.get(SPAWNED_ENV) else "torchrun")
    slurm = "SLURM_JOB_NODELIST" in env and "SLURM_PROCID" in env
    k8s = "JOB_COMPLETION_INDEX" in env
    # Naming rank 0 or this node's index takes over; a node or process count alone only
    # completes what a scheduler says (Kubernetes does not tell a pod the node count).
    explicit = master_addr is not None or node_rank is not None
    if explicit or (not slurm and not k8s and (nnodes or nproc_per_node)):
        n = nnodes or 1
        nr = node_rank or 0
        if n > 1 and not master_addr:
            raise DistilError(f"--nnodes {n} needs --master-addr (the host of node 0)")
        return _checked(Rendezvous(master_addr or "127.0.0.1", port or DEFAULT_PORT, n, nr,
                                   nproc_per_node or _gpu_count() or 1, None, None, "flags"))
    if slurm:
        return _from_slurm(env, master_addr, port, nproc_per_node)
    if k8s:
        return _from_k8s(env, nnodes, nproc_per_node, k8s_job, k8s_service, port)
    gpus = _gpu_count()
    if gpus > 1:  # a GPU node with no launcher: one rank per GPU
        return Rendezvous("127.0.0.1", port or DEFAULT_PORT, 1, 0, gpus, None, None, "single-node-gpus")
    return Rendezvous("127.0.0.1", port or DEFAULT_PORT, 1, 0, 1, 0, 0, "single")


def _checked(r: Rendezvous) -> Rendezvous:
    if r.nnodes < 1 or r.nproc_per_node < 1:
        raise DistilError(f"--nnodes {r.nnodes} / --nproc-per-node {r.nproc_per_node}: both must be at least 1")
    if not 0 <= r.node_rank < r.nnodes:
        raise DistilError(f"--node-rank {r.node_rank} is out of range for --nnodes {r.nnodes}: use 0..{r.nnodes - 1}")
    if r.rank is None and r.nproc_per_node == 1:
        r = dataclasses.replace(r, rank=r.node_rank, local_rank=0)
    return r


def _from_slurm(env: Mapping[str, str], master_addr: str | None, port: int | None,
                nproc_per_node: int | None) -> Rendezvous:
    hosts = expand_nodelist(env["SLURM_JOB_NODELIST"])
    nnodes = _int(env, "SLURM_NNODES") if "SLURM_NNODES" in env else len(hosts)
    ntasks = _int(env, "SLURM_NTASKS") if "SLURM_NTASKS" in env else nnodes
    node_id = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    # A port per job, so two jobs sharing a node do not collide.
    if not port:
        port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else \
            10000 + _int(env, "SLURM_JOB_ID") % 20000 if "SLURM_JOB_ID" in env else DEFAULT_PORT
    addr = master_addr or env.get("MASTER_ADDR") or hosts[0]
    if ntasks == nnodes and (nproc_per_node or _gpu_count()) > 1:
        # One task per node (the usual `srun --ntasks-per-node=1`): this task spawns the node's ranks.
        return _checked(Rendezvous(addr, port, nnodes, node_id, nproc_per_node or _gpu_count(), None, None, "slurm"))
    per_node = ntasks // nnodes
    if ntasks % nnodes:
        raise DistilError(f"SLURM_NTASKS={ntasks} is not a multiple of {nnodes} nodes: use --ntasks-per-node")
    return _checked(Rendezvous(addr, port, nnodes, node_id, per_node, _int(env, "SLURM_PROCID"),
                               _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0, "slurm"))


def _from_k8s(env: Mapping[str, str], nnodes: int | None, nproc_per_node: int | None, job: str | None,
              service: str | None, port: int | None) -> Rendezvous:
    index = _int(env, "JOB_COMPLETION_INDEX")
    if not nnodes:
        raise DistilError("JOB_COMPLETION_INDEX is set but the node count is not: pass --nnodes (= completions)")
    # Pods of an Indexed Job are named <job>-<index>; the job name comes from the flag, else the hostname.
    host = env.get("HOSTNAME", "")
    job = job or (host.rsplit("-", 1)[0] if re.search(r"-\d+$", host) else None)
    if not job:
        raise DistilError("cannot tell the Kubernetes Job name: pass --k8s-job (or DISTIL_K8S_JOB)")
    if not service:
        raise DistilError("multi-node Kubernetes training needs the headless service: pass --k8s-service "
                          "(or DISTIL_K8S_SERVICE)")
    namespace = env.get("POD_NAMESPACE")
    addr = f"{job}-0.{service}" + (f".{namespace}.svc" if namespace else "")
    procs = nproc_per_node or _gpu_count() or 1
    return _checked(Rendezvous(addr, port or DEFAULT_PORT, nnodes, index, procs, None, None, "k8s-indexed-job"))


# ---------------------------------------------------------------- process group


def backend_for(device_type: str, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "nccl" if device_type == "cuda" else "gloo"


DEFAULT_TIMEOUT_S = 300
# Joining may take long (a pod pulling its image, a node still in the queue), and so may a barrier
# while one rank uploads a checkpoint or the model (`io_barrier`); a training collective may not.
_JOIN_TIMEOUT_S = 30 * 60
_io_group: Any = None


def init_process_group(rdzv: Rendezvous, backend: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the group (a no-op for one process). Env vars are set too: DeepSpeed reads them.

    Ranks wait up to 30 minutes (or `timeout_s`, if longer) for each other to join; after that,
    a collective that gets no answer within `timeout_s` fails (`lost_peer`) instead of waiting forever."""
    if not rdzv.distributed:
        return
    import datetime

    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    os.environ.update(rdzv.env())
    # env://, not tcp://host:port: under torchrun the agent already serves a store on MASTER_PORT
    # (TORCHELASTIC_USE_AGENT_STORE), and a second store on the same port would wait forever.
    slow = datetime.timedelta(seconds=max(timeout_s, _JOIN_TIMEOUT_S))
    dist.init_process_group(backend, init_method="env://", rank=rdzv.rank, world_size=rdzv.world_size, timeout=slow)
    global _io_group
    _io_group = dist.new_group(backend="gloo", timeout=slow)  # CPU barriers, on GPUs too
    distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout_s))


def io_barrier() -> None:
    """A barrier where some rank may be busy with storage for long (saving or uploading a checkpoint,
    publishing the model): it waits up to the join timeout, not --dist-timeout. A dead peer still
    ends it at once (its connection closes)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_io_group)


# How a dead or silent peer shows up: gloo reports a closed connection at once ("Connection closed
# by peer", "Connection reset by peer"), or a timeout after --dist-timeout ("Timed out waiting ... for
# recv"); NCCL an aborted communicator. torch raises DistError subclasses for most, RuntimeError for some.
_PEER_LOST = re.compile(r"connection closed by peer|connection reset by peer|broken pipe|timed out|timeout|"
                        r"communicator was aborted|connection refused|socket closed", re.IGNORECASE)


def lost_peer(e: BaseException) -> bool:
    """Whether an error in a multi-rank run means a peer rank is gone (not a bug of this rank)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and bool(_PEER_LOST.search(str(e)))


def destroy_process_group() -> None:
    """Barrier, then destroy: ZeRO-3 on CPU aborts at interpreter exit without this."""
    import torch.distributed as dist

    global _io_group
    if dist.is_available() and dist.is_initialized():
        try:
            io_barrier()  # rank 0 may still be publishing the model
        finally:
            _io_group = None
            dist.destroy_process_group()


# ---------------------------------------------------------------- spawning


def _worker(target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    """One spawned rank. It ends through `exit_process`, like the CLI, so its code is exact."""
    import sys

    from distil_jobs.errors import DistilError as _DistilError
    from distil_jobs.exits import exit_process, run_and_exit

    os.environ.update(env)

    def rank() -> None:
        try:
            target(*args)
        except _DistilError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            exit_process(e.exit_code)
        except PreemptedError as e:
            print(f"preempted: {e}", file=sys.stderr, flush=True)
            exit_process(PreemptedError.exit_code)

    run_and_exit(rank)


def spawn_local(rdzv: Rendezvous, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run `target(*args)` in `nproc_per_node` fresh processes, one per local rank, and wait.

    Preemption signals are forwarded to every rank (they save and exit 75 together); if one
    rank fails, the others are stopped, since they would wait forever in a collective.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for local_rank in range(rdzv.nproc_per_node):
        env = rdzv.for_local_rank(local_rank).env() | {SPAWNED_ENV: str(os.getpid())}
        p = ctx.Process(target=_worker, args=(target, args, env), name=f"rank-{local_rank}")
        p.start()
        procs.append(p)

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        failed: int | None = None
        while any(p.is_alive() for p in procs):
            bad = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                if failed != PreemptedError.exit_code:
                    for p in procs:
                        if p.is_alive():
                            p.terminate()
            time.sleep(0.2)
        for p in procs:
            p.join()
        codes = [p.exitcode for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if any(c == PreemptedError.exit_code for c in codes):
        raise PreemptedError("a preemption signal stopped the local ranks after they saved a checkpoint")
    bad = [c for c in codes if c != 0]
    if bad:
        raise SystemExit(next((c for c in bad if c and c > 0), 1))
