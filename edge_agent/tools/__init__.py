"""The operator's tools beside the data path: ``earshot bench``, ``listen`` and ``calibrate``.

They run the agent's own pipeline (so they measure and tune what the sensor runs) but are not part of it:
``edge_agent/`` itself reads as mic -> ring buffer -> windows -> log-mel -> model -> detector -> publishers.
"""

# isort: off
import edge_agent.one_blas_thread  # noqa: F401 (before any tool loads numpy: they run the agent's path)
