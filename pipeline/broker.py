"""``tickerpulse broker``: the embedded Kafka-protocol broker on its own, for trying ``stream`` by hand.

    python run_pipeline.py broker --port 9092 --data-dir ./kafka-data

Prints the bootstrap address and serves until Ctrl-C or SIGTERM; the data directory keeps the
topics between runs (a temporary one, removed at the end, when none is given).
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import types

from connectors.kafka.embedded import EmbeddedBroker, create_topics
from pipeline.cli_args import UsageError, command_parser, env_default


def _require_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror})") from None


def run(argv: list[str]) -> int:
    p = command_parser("broker", "Start the embedded Kafka-protocol broker on 127.0.0.1 until Ctrl-C/SIGTERM.")
    p.add_argument("--port", type=int, default=env_default("broker_port", "9092"), help="TCP port (default 9092)")
    p.add_argument("--data-dir", default=env_default("broker_data_dir"), metavar="DIR",
                   help="where the broker keeps its topics (default: a temporary directory, removed at exit)")
    p.add_argument("--topics", nargs="*", default=[], metavar="TOPIC",
                   help="topics to create up front, keeping every record (e.g. news comments)")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535: {args.port}")
    _require_free(args.port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: types.FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=args.port, data_dir=args.data_dir)
    try:
        try:
            broker.start()
        except RuntimeError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        if args.topics:
            create_topics(broker.bootstrap_servers, args.topics)
        print(f"Kafka-protocol broker on {broker.bootstrap_servers} (data in {broker.data_dir}); "
              "Ctrl-C to stop", flush=True)
        print(f"  python run_pipeline.py stream --bootstrap-servers {broker.bootstrap_servers} --topics news "
              "--db pulse.duckdb", file=sys.stderr)
        while not stop.wait(0.5):
            if broker.exited():
                last = (broker.log_tail(300).strip().splitlines() or ["no log"])[-1]
                raise UsageError(f"the broker exited: {last}")
    finally:
        broker.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    print("broker stopped", flush=True)
    return 0
