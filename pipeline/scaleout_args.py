"""The ``stream`` flags of the scale-out roles (docs/architecture.md, "Scale-out")."""
from __future__ import annotations

import argparse

from pipeline.cli_args import UsageError, env_default

ROLES = ("stream", "score", "store")


def add_role_args(p: argparse.ArgumentParser) -> None:
    roles = p.add_argument_group("scale-out (docs/architecture.md)")
    roles.add_argument("--role", choices=ROLES, default=env_default("role", "stream"),
                       help="stream: the whole job in one process (default); score: a scoring worker, "
                            "--topics -> --scored-topic; store: the one store, --topics SCORED -> DuckDB "
                            "and --points-topic")
    roles.add_argument("--scored-topic", default=env_default("scored_topic"), metavar="TOPIC",
                       help="score: the topic scored items and dead letters are published to")
    roles.add_argument("--points-topic", default=env_default("points_topic"), metavar="TOPIC",
                       help="store: the topic every stored point is published to, keyed by ticker")
    roles.add_argument("--worker-index", type=int, default=env_default("worker_index"), metavar="I",
                       help="score: this worker reads partitions p with p %% --workers == I (default 0)")
    roles.add_argument("--workers", type=int, default=env_default("workers"), metavar="N",
                       help="score: how many scoring workers share the input partitions (default 1)")


def check_role(args: argparse.Namespace) -> None:
    """Each role's own flags are required by it and refused by the others (a flag that would do
    nothing is a mistake); fills the worker share's defaults."""
    own = {"score": ("scored_topic", "worker_index", "workers"), "store": ("points_topic",), "stream": ()}
    for flag in ("scored_topic", "points_topic", "worker_index", "workers"):
        if getattr(args, flag) is not None and flag not in own[args.role]:
            raise UsageError(f"--{flag.replace('_', '-')} applies only to "
                             f"--role {next(r for r, flags in own.items() if flag in flags)}")
    if args.role == "score":
        if not args.scored_topic:
            raise UsageError("--role score needs --scored-topic")
        args.worker_index = 0 if args.worker_index is None else int(args.worker_index)
        args.workers = 1 if args.workers is None else int(args.workers)
        if not 0 <= args.worker_index < args.workers:
            raise UsageError(f"--worker-index must be in 0..--workers-1, not {args.worker_index} of {args.workers}")
        if args.scored_topic in args.topics:
            raise UsageError(f"--scored-topic {args.scored_topic} is also an input topic")
    if args.role == "store" and not args.points_topic:
        raise UsageError("--role store needs --points-topic")
    if args.role == "store" and args.points_topic in args.topics:
        raise UsageError(f"--points-topic {args.points_topic} is also an input topic")
