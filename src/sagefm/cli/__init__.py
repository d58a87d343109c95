"""The `sagefm` command line: each command is a thin wrapper over the Python API.

One module per group of commands (`training`: pretrain, prepare, demo; `apply`: embed, impute,
adapt, learn-panels, learn-decoder; `analysis`: perturb, explain; `evaluation`: evaluate,
bench), and `options` for what they share.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from sagefm._threads import one_blas_thread
from sagefm.cli import analysis, apply, evaluation, training
from sagefm.errors import SageFMError, TrainingInterrupted

logger = logging.getLogger("sagefm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagefm", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    training.add_parsers(sub)
    apply.add_parsers(sub)
    evaluation.add_parsers(sub)
    analysis.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status: 0, 2 for a `SageFMError`, 128 + signal if interrupted."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":  # the benchmark script parses its own flags
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with one_blas_thread():  # the statistics around the network (`sagefm._threads`)
            return args.func(args) or 0
    except TrainingInterrupted as exc:  # checkpoint saved; 128 + signal, as a shell reports it
        logger.warning("%s", exc)
        return 128 + exc.signum
    except SageFMError as exc:
        logger.error("%s", exc)
        return 2
