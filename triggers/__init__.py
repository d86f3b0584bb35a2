"""Triggers: one module per kind (http today; cron and kafka follow), behind one contract."""

from .base import EventRunner

__all__ = ["EventRunner"]
