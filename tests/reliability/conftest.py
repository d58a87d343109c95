"""Shared by the fuzz tests: run a call on a generated input and classify how it ended.

Every generated case must end in a correct result or a `SageFMError` whose message says what to
fix; anything else (a numpy/torch/h5py/pandas exception, a hang) fails the test. The outcomes are
counted over the session, printed in the terminal summary and written to
``<pytest basetemp>/reliability_cases.json``.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import pytest

from sagefm.errors import SageFMError

T = TypeVar("T")

#: a generated case taking longer than this is a hang
CASE_TIMEOUT_S = 60
OUTCOMES: Counter[str] = Counter()


class CaseTimeout(Exception):
    """A generated case ran past `CASE_TIMEOUT_S`."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout(f"a generated case ran for more than {CASE_TIMEOUT_S} s (a hang?)")


class CaseRunner:
    """``run(kind, call)``: the call's result, or None after a clear `SageFMError` (counted)."""

    def run(self, kind: str, call: Callable[[], T]) -> T | None:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(CASE_TIMEOUT_S)
        try:
            result = call()
        except SageFMError as exc:
            message = str(exc)
            assert len(message) > 20, f"an error message too short to act on: {message!r}"
            OUTCOMES[f"{kind}: clear error ({type(exc).__name__})"] += 1
            return None
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        OUTCOMES[f"{kind}: result"] += 1
        return result


@pytest.fixture(scope="session")
def cases() -> CaseRunner:
    return CaseRunner()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not OUTCOMES:
        return
    total = sum(OUTCOMES.values())
    terminalreporter.write_sep(
        "-", f"reliability: {total} generated cases ended in a result or a clear sagefm error"
    )
    for outcome, count in sorted(OUTCOMES.items()):
        terminalreporter.write_line(f"{count:6d}  {outcome}")
    path = config._tmp_path_factory.getbasetemp() / "reliability_cases.json"  # type: ignore[attr-defined]
    path.write_text(json.dumps({"total": total, "outcomes": dict(OUTCOMES)}, indent=2))
    terminalreporter.write_line(f"written to {path}")
