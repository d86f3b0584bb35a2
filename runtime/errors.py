"""The one error tree of sluice.

::

    SluiceError                      root: everything sluice raises on purpose
    ├── SpecError                    a function spec or function.yaml is invalid (names the field)
    ├── HandlerError                 the handler could not be loaded or its init_context failed
    ├── NotFoundError                no function (or run, or model) by that name
    ├── PlatformError                the control plane could not do what was asked
    │   └── DeployError              workers of a new version did not become ready
    ├── ArtifactError                an artifact is missing, corrupt, or named outside its store
    ├── InferenceError               a model could not answer an inference request
    │   ├── InvalidTensorError       the request's tensors are malformed (400)
    │   └── OverloadedError          it cannot be served within its deadline (503)
    └── ApiError                     the platform API answered with an error (client side)
        └── UnauthorizedError        the API token was missing or wrong

The CLI renders any of them as one line on stderr and a non-zero exit code; the platform API
renders them as an HTTP status with ``{"error": "..."}`` (``http_status`` below).
"""

from __future__ import annotations


class SluiceError(Exception):
    """Root of every error sluice raises on purpose."""

    http_status = 500


class SpecError(SluiceError, ValueError):
    """A function spec is invalid; the message names the field and what is allowed."""

    http_status = 400


class HandlerError(SluiceError):
    """The handler could not be imported, found, or initialised."""

    http_status = 400


class NotFoundError(SluiceError, LookupError):
    """No such function (or other named object)."""

    http_status = 404


class PlatformError(SluiceError):
    """The control plane could not carry out the request."""

    http_status = 500


class DeployError(PlatformError):
    """A new version's workers did not become ready; the previous version keeps serving."""

    http_status = 422


class ArtifactError(SluiceError):
    """An artifact (a model file, a dataset) is missing, fails its integrity check, or its name
    would escape the store."""

    http_status = 400


class InferenceError(SluiceError):
    """A model could not answer an inference request."""

    http_status = 500


class InvalidTensorError(InferenceError, ValueError):
    """An inference request's tensors are malformed; the message names the input and why."""

    http_status = 400


class OverloadedError(InferenceError):
    """The request cannot be served within its deadline (rejected at once, not queued)."""

    http_status = 503


class ApiError(SluiceError):
    """The platform API answered with an error status (raised by the client)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status


class UnauthorizedError(ApiError):
    """The API token was missing or wrong."""
