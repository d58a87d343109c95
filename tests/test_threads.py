"""`sagefm._threads`: numpy's and scipy's BLAS on one thread while the context is open."""

import scipy.linalg  # noqa: F401  (scipy loads its own BLAS; the limit must find it too)
from threadpoolctl import threadpool_info

from sagefm._threads import one_blas_thread


def _blas_threads() -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_one_blas_thread_limits_every_blas_and_restores_it() -> None:
    before = _blas_threads()
    assert before, "numpy has no BLAS to limit"
    with one_blas_thread():
        inside = _blas_threads()
    assert inside.keys() == before.keys()
    assert set(inside.values()) == {1}
    assert _blas_threads() == before


def test_one_blas_thread_leaves_pytorch_threads_alone() -> None:
    import torch

    threads = torch.get_num_threads()
    with one_blas_thread():
        assert torch.get_num_threads() == threads
