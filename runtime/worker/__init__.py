"""A worker process: imports the handler, runs init_context, serves the function's triggers."""

from .config import EXIT_OK, EXIT_RECYCLED, EXIT_STARTUP_FAILED, WorkerConfig

__all__ = ["EXIT_OK", "EXIT_RECYCLED", "EXIT_STARTUP_FAILED", "WorkerConfig"]
