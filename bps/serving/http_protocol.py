"""uvicorn's HTTP/1.1 protocol, closing connections whose request headers never finish.

The service times out slow *bodies* itself (bps/serving/app.py), but an ASGI app only hears of a
request once its headers are complete, and uvicorn starts no clock before that: a client that
opens a connection and sends a header line now and then (slowloris) holds a socket forever.
Here every request's headers must be complete within ``header_timeout`` seconds of the
connection opening, or of the previous response on a kept-alive connection; otherwise the
connection is closed without a response (there is no request to answer yet).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds; a browser or HTTP client sends its headers in one go


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol plus a clock on request headers (``header_timeout``, a class attribute)."""

    header_timeout: float = HEADER_TIMEOUT
    _header_clock: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived
            self._stop_header_clock()

    def on_response_complete(self) -> None:
        self._start_header_clock()  # before: a pipelined request handled in there stops it again
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        self._header_clock = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        if not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to give ``uvicorn.run(http=...)`` for a header timeout of ``seconds``."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})
