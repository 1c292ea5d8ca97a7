"""Typed Tuya errors and how Tuya's answers and transport failures map onto them.

Transient errors are worth retrying with backoff (DESIGN §3); permanent ones fail the top-up at
once. `TuyaOutcomeUnknown` is the dangerous middle: a command may have reached the meter, so the
caller must verify with the purchase counter before sending again, never resend blindly.
"""

from __future__ import annotations

import requests
from urllib3.exceptions import NewConnectionError

from core.shared.errors import ConfigurationError, DeviceOffline, UpstreamError

TOKEN_CODES = frozenset({1002, 1010, 1011, 1012})  # reconnect and retry once
THROTTLE_CODES = frozenset({1110, 1111, 1199})
TRANSIENT_CODES = TOKEN_CODES | THROTTLE_CODES | {500, 2001}
CLOCK_SKEW = 1013
# The project's setup, not the request: wrong keys, a device outside the project, a clock off by
# minutes, and the 28841xxx family (an API whose cloud service is not subscribed or not authorised
# for the project, an expired plan, a used-up trial quota). Retrying cannot help; a person must act.
_SETUP_CODES = frozenset({1001, 1004, 1005, 1106, CLOCK_SKEW})
_PERMISSION_FAMILY = 28841  # 28841001 No permissions, 28841002 plan expired, 28841004 quota used up, ...

_MESSAGES = {
    2001: "the meter is offline",
    2008: "the meter does not support this command or value",
    1101: "the value is out of the meter's range",
    1106: "no permission for this meter in the Tuya project",
    1001: "the Tuya access secret is wrong (secret invalid): check TUYA_ACCESS_SECRET",
    1004: "the Tuya credentials are wrong (sign invalid): check TUYA_ACCESS_ID and TUYA_ACCESS_SECRET",
    1005: "the Tuya access id is wrong (clientId invalid): check TUYA_ACCESS_ID",
    CLOCK_SKEW: "the Tuya cloud refused the request time (1013): this server's clock is wrong; "
                "sync it with NTP (e.g. `timedatectl set-ntp true`)",
    500: "the Tuya cloud had an internal error",
}
_PERMISSION_HINTS = {
    28841002: "the project's cloud development plan has expired: extend it on platform.tuya.com "
              "(Cloud > Cloud Services)",
    28841004: "the project has used up its Tuya API quota (trial edition): upgrade or wait for the "
              "monthly refresh on platform.tuya.com",
    28841101: "the project lacks a Tuya cloud service this API needs: subscribe to IoT Core on "
              "platform.tuya.com (Cloud > Cloud Services) and authorise the project",
    28841105: "the project is not authorised to call this API: authorise it for IoT Core on "
              "platform.tuya.com (Cloud > Cloud Services > IoT Core > authorised projects)",
}


class TuyaError(UpstreamError):
    """Any failure talking to the Tuya cloud. `tuya_code` is Tuya's code (None for transport errors)."""

    def __init__(self, message: str, *, tuya_code: int | None = None, transient: bool = False) -> None:
        code = f"tuya_{tuya_code}" if tuya_code is not None else "tuya_unavailable"
        super().__init__(message, code=code, transient=transient)
        self.tuya_code = tuya_code


class TuyaTransientError(TuyaError):
    def __init__(self, message: str, *, tuya_code: int | None = None) -> None:
        super().__init__(message, tuya_code=tuya_code, transient=True)


class TuyaOutcomeUnknown(TuyaTransientError):
    """A command was sent but no answer came back: it may or may not have been applied."""


class TuyaDeviceOffline(TuyaTransientError, DeviceOffline):
    """2001: the cloud answers, the meter does not."""


class TuyaPermanentError(TuyaError):
    def __init__(self, message: str, *, tuya_code: int | None = None) -> None:
        super().__init__(message, tuya_code=tuya_code, transient=False)


class TuyaConfigurationError(TuyaPermanentError, ConfigurationError):
    """The Tuya project or this server is set up wrong (keys, subscription, quota, clock): never
    retried as transient; the message says what a person must fix."""


def is_setup_code(code: int | None) -> bool:
    return code is not None and (code in _SETUP_CODES or code // 1000 == _PERMISSION_FAMILY)


class HttpStatusError(Exception):
    """A non-2xx HTTP answer (tuya-connector-python itself would crash with AttributeError)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def error_from_response(response: dict | None, *, command_sent: bool = False) -> TuyaError:
    """A Tuya {"success": false, "code", "msg"} answer → typed error."""
    response = response or {}
    try:
        code = int(response.get("code"))
    except (TypeError, ValueError):
        code = None
    text = _MESSAGES.get(code) or str(response.get("msg") or "refused the request")
    if code is not None and code // 1000 == _PERMISSION_FAMILY:
        hint = _PERMISSION_HINTS.get(code, "the Tuya project lacks a permission or cloud service "
                                           "subscription; check Cloud > Cloud Services on platform.tuya.com")
        text = f"{response.get('msg') or 'No permissions.'} ({hint})"
    message = f"Tuya error {code}: {text}" if code is not None else f"Tuya {text}"
    if code == 500 and command_sent:
        # "system error" after the command reached Tuya says nothing about whether the meter acted.
        return TuyaOutcomeUnknown(message, tuya_code=code)
    if code == 2001:
        return TuyaDeviceOffline(message, tuya_code=code)
    if code in TRANSIENT_CODES:
        return TuyaTransientError(message, tuya_code=code)
    if is_setup_code(code):
        return TuyaConfigurationError(message, tuya_code=code)
    return TuyaPermanentError(message, tuya_code=code)


def error_from_exception(exc: BaseException, *, command_sent: bool) -> TuyaError:
    """Transport failure → typed error. After a command left, only a failure to connect is safe."""
    if isinstance(exc, HttpStatusError):
        if exc.status_code >= 500 or exc.status_code == 429:
            cls = TuyaOutcomeUnknown if command_sent else TuyaTransientError
            return cls(f"the Tuya cloud answered HTTP {exc.status_code}")
        return TuyaPermanentError(f"the Tuya cloud answered HTTP {exc.status_code}")
    never_arrived = isinstance(exc, requests.exceptions.ConnectTimeout) or (
        isinstance(exc, requests.exceptions.ConnectionError) and _is_connect_failure(exc))
    if isinstance(exc, requests.exceptions.Timeout):
        text = "the Tuya cloud did not answer in time"
    elif never_arrived:
        text = "could not reach the Tuya cloud"
    else:
        text = "the connection to the Tuya cloud broke"
    if command_sent and not never_arrived:
        return TuyaOutcomeUnknown(text + " (the command may have been applied)")
    return TuyaTransientError(text)


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    # urllib3 wraps refused/unresolvable connections as NewConnectionError inside MaxRetryError.
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, NewConnectionError)
