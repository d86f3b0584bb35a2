"""The HTTP trigger: the function's own port, shared by all its worker processes."""

from .server import HttpLimits, HttpServer

__all__ = ["HttpLimits", "HttpServer"]
