"""One BLAS thread for the numpy and scipy work around the network.

numpy and scipy each bring their own OpenBLAS, each with a pool of spinning threads. Fits that
alternate many small calls between the two (sklearn's L-BFGS logistic regression, its Gaussian
mixture) then run the pools against each other: on a 2-core machine a Gaussian mixture took 9x,
a logistic regression 2.5-10x, as long as on one thread, and one thread was no slower for a PCA of
a 3,600 x 5,000 slide (README, Speed and scale, "One BLAS thread for the statistics"). PyTorch's
own thread pool (OpenMP) is a different one and is left alone.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread() -> threadpool_limits:
    """A context manager that limits numpy's and scipy's BLAS to one thread while it is open.

    Created at each use, so that it finds every BLAS loaded by then (scipy loads its own lazily).
    """
    return threadpool_limits(1, user_api="blas")
