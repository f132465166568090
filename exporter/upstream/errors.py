"""Every way a request can fail to produce a usable answer, as the core sees it.

Each error carries what a log line and a metric need (endpoint, the ``code`` label of
``api_requests_total``, the API's own message) so that the poller can keep its last good data
and say what happened without knowing aiohttp or any provider's error format.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request that produced no usable answer."""

    code = "error"

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(f"{endpoint}: {detail}")
        self.endpoint = endpoint
        self.detail = detail

    def describe(self) -> str:
        """A stable one-line description that tells a new problem from a repeated one."""
        return str(self)


class ApiStatusError(ApiError):
    """The API answered with a non-2xx status; ``message`` is its own explanation."""

    def __init__(
        self, endpoint: str, status: int, message: str, retry_after: str | None = None
    ) -> None:
        super().__init__(endpoint, f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.code = str(status)

    @property
    def is_auth_failure(self) -> bool:
        return self.status in (401, 403)


class ApiTransportError(ApiError):
    """No HTTP answer at all: refused, reset, DNS, TLS or timed out."""

    def __init__(self, endpoint: str, kind: str, detail: str) -> None:
        super().__init__(endpoint, detail)
        self.code = kind


class ApiResponseError(ApiError):
    """An answer whose body is not what the API promises: not JSON, the wrong shape, too big,
    too deep, too many entries, a page token that repeats. Counted as ``invalid_body`` rather
    than as its HTTP status, so that error rates and alerts see it."""

    code = "invalid_body"


def is_auth_failure(error: ApiError | None) -> bool:
    return isinstance(error, ApiStatusError) and error.is_auth_failure
