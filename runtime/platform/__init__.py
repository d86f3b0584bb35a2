"""Control planes behind one interface: LocalPlatform today (Ray and Kubernetes later)."""

from .base import FunctionStatus, InvokeRequest, InvokeResponse, Platform
from .states import FunctionState

__all__ = ["FunctionState", "FunctionStatus", "InvokeRequest", "InvokeResponse", "Platform"]
