"""BLAS's own threads, held to one while transpec's work runs beside other work.

Two places need it: the streaming attention reference, whose threads each take whole blocks
(BLAS spreading each block's products over the cores as well would oversubscribe them), and a
run whose implementation is in a worker process (OpenBLAS's idle threads spin, between the
references' small products, on the cores the worker needs). ``threadpoolctl`` sets the limit
in every BLAS library loaded in this process and restores it on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util


def can_hold() -> bool:
    """Whether :func:`one_thread` can hold BLAS (``threadpoolctl`` is installed)."""
    return importlib.util.find_spec("threadpoolctl") is not None


def one_thread() -> contextlib.AbstractContextManager[object]:
    """BLAS held to one thread in this process while the context lasts (nothing where
    ``threadpoolctl`` is missing: :func:`can_hold`)."""
    if not can_hold():
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
