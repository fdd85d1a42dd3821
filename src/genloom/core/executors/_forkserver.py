"""What the local executor's fork server imports once, before it forks any worker.

Imported only in that server process (``multiprocessing``'s forkserver, a fresh interpreter the
pool starts on first use), never by the driver: it sets one BLAS/OpenMP thread before NumPy
loads (the driver keeps its own settings), then imports what every worker needs, so each worker
forked from the server starts with PyArrow, NumPy, ``genloom.core.runner`` (the store, the step
families), SciPy's sparse module and pandas already imported instead of importing them itself.
pandas is not a genloom dependency, but where it is installed PyArrow imports it on a process's
first ``pa.array`` (to check the argument against pandas types), which every shard's output
makes: 0.3 s of CPU per worker otherwise.
"""

from __future__ import annotations

import contextlib
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pyarrow.parquet  # noqa: E402, F401

import genloom.core.runner  # noqa: E402, F401

with contextlib.suppress(ImportError):  # an optional dependency: the text vectorizers' matrices
    import scipy.sparse  # noqa: F401
with contextlib.suppress(ImportError):  # imported by PyArrow's first pa.array when installed
    import pandas  # noqa: F401
