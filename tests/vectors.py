"""Signature vectors from the gateway's documentation (docs/gateway.md §4.4), shared by the tests."""

from __future__ import annotations

from typing import Final

#: the test key of the worked MD5 example (docs/gateway.md §4.4)
SPEC_KEY: Final = "2I9Q4nExEddsH6zo"
#: its published (and reproduced) signature
SPEC_SIGN: Final = "bc29e8a132edf819431227154c2586c6"
#: the create request of the worked example, every value as the text that is signed
SPEC_EXAMPLE: Final = {
    "amount": "100000",
    "name": "王小头",
    "notify_url": "http://localhost:52630/gateway/test-notification",
    "number": "6216667451674374",
    "payout_cl_id": "test_gateway_1707220674",
    "platform_id": "PF0001",
    "request_time": "1707220674",
    "service_id": "SVC0004",
}
