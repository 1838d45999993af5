"""``tickerpulse broker`` as a user runs it: a subprocess, a real producer and consumer, SIGTERM."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from connectors.kafka.embedded import free_port
from pipeline.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_broker_serves_until_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "broker", "--port", str(port),
                             "--data-dir", str(tmp_path / "kafka"), "--topics", "news"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"Kafka-protocol broker on 127.0.0.1:{port} "), first + proc.stderr.read()
        bootstrap = f"127.0.0.1:{port}"
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("news", b'{"text": "$AAPL by hand"}').get(timeout=30)
        producer.close()
        consumer = KafkaConsumer("news", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20_000, group_id="by-hand")
        record = next(consumer, None)
        consumer.close()
        assert record is not None and record.value == b'{"text": "$AAPL by hand"}'
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    with socket.socket() as probe:  # the broker process is gone with it
        probe.bind(("127.0.0.1", port))
    assert (tmp_path / "kafka").is_dir()  # a given data dir is kept


def test_a_port_in_use_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["broker", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err and "\n" not in err
