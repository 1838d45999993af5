"""An embedded Kafka-protocol broker for the demo and the tests: the ``noida-db`` binary from PyPI.

It speaks the standard Kafka protocol, so everything that talks to it also talks to Apache Kafka.
Two quirks: it applies time retention at once to old timestamps, so topics are created with
``retention.ms=-1`` (see :func:`create_topics`); and it keeps all its records in one JSON file
that it rewrites about once a second (measured with noida-db 0.2.3), so its CPU grows with the
records it keeps and a kill -9 loses up to a second of acknowledged ones. Long benchmarks
therefore bound their topics' retention (docs/performance.md, "Streaming").
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broker_binary() -> Path:
    path = Path(str(files("noida_db").joinpath("noida-db")))
    if not path.is_file():
        raise RuntimeError(f"noida-db binary not found at {path}; pip install noida-db")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


class EmbeddedBroker:
    """Start/stop a local Kafka-protocol broker on 127.0.0.1; restartable on the same data dir."""

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="tickerpulse-kafka-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        cmd = [str(broker_binary()), "start", "--only", "kafka", "--host", "127.0.0.1",
               "--kafka-port", str(self.port), "--data-dir", str(self.data_dir)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self._log_path, "ab")
        self._proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Kafka broker exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded Kafka broker ready on %s", self.bootstrap_servers)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Kafka broker did not listen on port {self.port} within {timeout_s}s")

    def exited(self) -> bool:
        """True once a started broker process has ended on its own."""
        return self._proc is not None and self._proc.poll() is not None

    def stop(self, kill: bool = False) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill() if kill else self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_topics(bootstrap_servers: str, topics: list[str], partitions: int = 1, retention_ms: int = -1) -> None:
    """Create topics that keep every record (``retention.ms=-1``), or about ``retention_ms`` of
    records by their Kafka timestamp; existing ones are left alone.

    Retention deletes only closed log segments, as in Kafka, so a bounded topic also closes its
    segment every tenth of the retention (``segment.ms``; the default is a week)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="tickerpulse-admin")
    try:
        configs = {"retention.ms": str(retention_ms)}
        if retention_ms >= 0:
            configs["segment.ms"] = str(max(1000, retention_ms // 10))
        for topic in topics:
            try:
                admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                              topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
