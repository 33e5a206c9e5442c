"""One BLAS thread for the agent-side commands: import this module before anything imports numpy.

The front-end's small matmuls lose more to OpenBLAS thread hand-offs than they gain (measured 0.19 vs
0.05 ms per window), and the agent must stay on its core. ``setdefault``, so an operator's own setting
wins. Not set in ``edge_agent/__init__.py``: training imports edge_agent too, and torch would then run
on one thread.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
