"""``sagefm bench`` runs the source checkout's benchmarks/bench.py, or says what to install."""

import logging
import sys
from pathlib import Path

import pytest

from sagefm.cli import evaluation, main
from sagefm.errors import SageFMError

FAKE_BENCH = """
import json, sys
from pathlib import Path

def main(argv=None):
    Path(argv[argv.index("--output") + 1]).write_text(json.dumps({"argv": argv}))
    return 3
"""


def test_bench_script_is_looked_up_in_the_source_checkout() -> None:
    import sagefm

    package = Path(sagefm.__file__).resolve().parent
    assert evaluation.BENCHMARK_SCRIPT == package.parents[1] / "benchmarks" / "bench.py"


def test_bench_passes_its_arguments_to_the_script_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bench.py"
    script.write_text(FAKE_BENCH)
    monkeypatch.setattr(evaluation, "BENCHMARK_SCRIPT", script)
    monkeypatch.setitem(sys.modules, "torch_geometric", sys)  # present, whatever is installed
    out = tmp_path / "bench.json"
    argv = ["--quick", "--output", str(out), "--seed", "4", "--data-dir", "d", "--threads", "1"]
    assert main(["bench", *argv]) == 3  # the script's exit status
    assert out.read_text() == '{"argv": ' + str(argv).replace("'", '"') + "}"
    assert str(tmp_path) not in sys.path  # the script's folder was on the path only while loading


def test_bench_without_the_script_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(evaluation, "BENCHMARK_SCRIPT", tmp_path / "benchmarks" / "bench.py")
    with pytest.raises(SageFMError, match=r'source checkout .*pip install -e "\.\[dev\]"'):
        evaluation.benchmark_main()
    with caplog.at_level(logging.ERROR):
        assert main(["bench", "--quick"]) == 2
    assert "is not installed" in caplog.text


def test_bench_without_torch_geometric_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bench.py"
    script.write_text(FAKE_BENCH)
    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # import torch_geometric fails
    with pytest.raises(SageFMError, match=r"torch_geometric.*pip install -e \"\.\[dev\]\""):
        evaluation.benchmark_main(script)


def test_bench_script_without_main_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("torch_geometric")
    script = tmp_path / "bench.py"
    script.write_text("x = 1\n")
    with pytest.raises(SageFMError, match="no main"):
        evaluation.benchmark_main(script)
