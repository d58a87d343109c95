"""Commands over the shared data and the source checkout: ``evaluate`` (the report) and ``bench``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sagefm
from sagefm._constants import DATA_ENV
from sagefm.cli.options import add_command
from sagefm.errors import SageFMError

logger = logging.getLogger("sagefm")

#: The benchmark script of a source checkout; a plain ``pip install`` does not ship it.
BENCHMARK_SCRIPT = Path(sagefm.__file__).resolve().parents[2] / "benchmarks" / "bench.py"
_INSTALL_HINT = (
    'run it from a source checkout of sagefm installed with `pip install -e ".[dev]"` '
    "(or `python benchmarks/bench.py` there)"
)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """The evaluation report (see `sagefm.evaluation.evaluate`)."""
    from sagefm.evaluation import EvaluationConfig, evaluate

    config = None
    if args.adapt_epochs or args.gcn_layer is not None:
        base = EvaluationConfig.quick() if args.quick else EvaluationConfig()
        config = dataclasses.replace(
            base,
            adapt_epochs=args.adapt_epochs,
            adapt_learning_rate=args.adapt_learning_rate,
            gcn_layer=args.gcn_layer,
        )
    metrics = evaluate(
        args.model,
        data_dir=args.data_dir,
        output=args.output,
        quick=args.quick and config is None,
        seed=args.seed,
        sections=args.sections,
        progress=not args.no_progress,
        config=config,
    )
    logger.info(
        "report in %s (%.0f s)", Path(args.output) / "report.md", metrics["meta"]["wall_time_s"]
    )


def benchmark_main(script: Path | None = None) -> Callable[[list[str]], int]:
    """``main`` of the benchmark script (``benchmarks/bench.py`` of the source checkout).

    Raises `SageFMError` saying what to install when the script or its dev-only dependency
    (``torch_geometric``, the reference implementation it compares against) is missing.
    """
    script = script or BENCHMARK_SCRIPT
    if not script.is_file():
        raise SageFMError(f"`sagefm bench` needs {script}, which is not installed: {_INSTALL_HINT}")
    if importlib.util.find_spec("torch_geometric") is None:
        raise SageFMError(
            "`sagefm bench` compares against torch_geometric, which is not installed: "
            + _INSTALL_HINT
        )
    spec = importlib.util.spec_from_file_location("sagefm_benchmarks_bench", script)
    assert spec is not None and spec.loader is not None  # a .py file always has a loader
    module = importlib.util.module_from_spec(spec)
    # as `python benchmarks/bench.py` would: the script's folder first on the path
    sys.path.insert(0, str(script.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    main = getattr(module, "main", None)
    if not callable(main):
        raise SageFMError(f"{script} has no main(argv) function; update the source checkout")
    return main


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark script with the remaining arguments (its own flags, see its --help)."""
    return int(benchmark_main()(list(args.bench_args)))


def add_parsers(sub: Any) -> None:
    """``evaluate`` and ``bench`` on the subparsers ``sub``."""
    from sagefm.evaluation import SECTIONS

    p = add_command(sub, "evaluate", "write the evaluation report against baselines", cmd_evaluate)
    p.add_argument("--model", required=True, help="model directory or pretraining output")
    p.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_ENV, "../shared/data"),
        help=f"folder with dlpfc/, her2st/, prostate/ (${DATA_ENV} or ../shared/data)",
    )
    p.add_argument("--output", required=True, help="report folder (replaced atomically)")
    p.add_argument("--quick", action="store_true", help="small slices, a few minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and baselines")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, help="default: all")
    p.add_argument(
        "--adapt-epochs",
        type=int,
        default=0,
        help="also score domains and masked-gene recovery with the model adapted to each slide "
        "for up to N epochs (0 = no)",
    )
    p.add_argument(
        "--adapt-learning-rate",
        type=float,
        default=None,
        help="learning rate of that adaptation (default: the model's training rate)",
    )
    p.add_argument(
        "--gcn-layer",
        type=int,
        default=None,
        help="the GCN layer every section reads as SAGE-FM's embedding (-1 = last; default: the "
        "model's ModelConfig.embedding_layer)",
    )

    # the benchmark script parses its own flags (--output, --data-dir, --quick, ...)
    p = sub.add_parser(
        "bench",
        help="speed and scale benchmark against a plain PyG reference (source checkout only; "
        "`sagefm bench --help` for its options)",
        add_help=False,
    )
    p.set_defaults(func=cmd_bench, bench_args=[])
