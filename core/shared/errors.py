"""Domain errors. Each carries a stable machine `code` and a message a tenant or operator can read.

Entry points map them to their channel (HTTP status, USSD re-prompt, CLI exit), so the mapping
lives in one place per channel and the core never knows about HTTP.
"""


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class InvalidInput(DomainError):
    code = "invalid_input"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class UpstreamError(DomainError):
    """An upstream service (Daraja, Tuya, SMS) refused or failed; the message is safe to show."""

    code = "upstream_error"

    def __init__(self, message: str, *, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message, code=code)
        self.transient = transient


class DeviceOffline(UpstreamError):
    """The meter is not connected to its cloud: worth retrying later, and worth showing a landlord."""

    def __init__(self, message: str = "the meter is offline", *, code: str | None = "device_offline",
                 transient: bool = True) -> None:
        super().__init__(message, code=code, transient=True)


class ConfigurationError(UpstreamError):
    """An upstream refused because of how we are set up (credentials, a missing cloud subscription,
    a used-up quota, this server's clock): retrying cannot help until a person fixes it."""

    code = "configuration_error"

    def __init__(self, message: str, *, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message, code=code, transient=False)
