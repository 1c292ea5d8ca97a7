"""Drive `wrk` (64 connections) with a Lua script per path; every request distinct where it must be
(one CheckoutRequestID, one USSD session, one phone per request). Results as a dict: rate, p50, p99."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONNECTIONS = 64
THREADS = 2

# Each wrk thread numbers its requests offset + thread + k * threads: distinct across threads and runs.
COMMON = """
local threads, counter = {threads}, 0
local offset = 0
function setup(thread)
  thread:set("tid", __tid or 0); __tid = (__tid or 0) + 1
end
function init(args)
  offset = tonumber(args[1] or "0")
  counter = offset + tid
end
function next_id()
  local n = counter; counter = counter + threads; return n
end
function done(summary, latency, requests)
  io.write(string.format('WRKJSON {{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, '
    .. '"errors": %d, "non2xx": %d}}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""

USSD = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
request = function()
  local n = next_id()
  local body = string.format("sessionId={session}-%d&serviceCode=%%2A384%%2A1%%23&phoneNumber=%%2B2547%08d"
    .. "&networkCode=63902&text={text}", n, n)
  return wrk.format(nil, nil, nil, body)
end
"""

SCRIPTS = {
    "plain_post": """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.body = [[{body}]]
""",
    "callback": """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local n = next_id()
  local body = string.format('{{"Body": {{"stkCallback": {{"MerchantRequestID": "1-1-1", '
    .. '"CheckoutRequestID": "ws_CO_bench_%d", "ResultCode": 0, "ResultDesc": "The service request is processed successfully.", '
    .. '"CallbackMetadata": {{"Item": [{{"Name": "Amount", "Value": 100.0}}, {{"Name": "MpesaReceiptNumber", "Value": "BEN%07d"}}, '
    .. '{{"Name": "TransactionDate", "Value": 20261127101500}}, {{"Name": "PhoneNumber", "Value": 254700000000}}]}}}}}}}}', n, n)
  return wrk.format(nil, nil, nil, body)
end
""",
    # A first hop (`text` empty) in a new session, and the next hop (`1`) in a session stored as bench/seed.py's
    # add_ussd_sessions writes them; each from its own phone.
    "ussd": USSD.format(session="bench", text=""),
    "ussd_next": USSD.format(session="next", text="1"),
    "payment": """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {api_key}"
request = function()
  local body = string.format('{{"amount": 100, "phoneNumber": "2547%08d", "meterId": "A101", "description": "bench"}}',
    next_id())
  return wrk.format(nil, nil, nil, body)
end
""",
}


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, script: str, *, seconds: float, offset: int = 0, **fields: str) -> Result:
    lua = COMMON.format(threads=THREADS) + SCRIPTS[script].format(**fields)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(lua)
    try:
        command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                   "-s", handle.name, url, "--", str(offset)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        Path(handle.name).unlink()
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return Result(**json.loads(line[len("WRKJSON "):]))
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
