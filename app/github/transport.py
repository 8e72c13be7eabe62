"""One connection pool per event loop for all of a process's GitHub calls.

githubkit makes a new httpx client for each request made outside `async with`, and each
new client builds its own TLS context (loading the CA bundle: most of the App's CPU under
load) and opens a new connection (a TCP and TLS handshake per call to GitHub). Given this
transport, every client githubkit makes shares one TLS context and kept-alive connections,
and a client closing leaves them open.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx


class SharedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that the clients using it cannot close.

    Connections belong to the event loop that opened them, so each loop (a test's, a
    second `asyncio.run`) has a pool of its own, dropped with the loop."""

    def __init__(self) -> None:
        self._tls = httpx.create_ssl_context(verify=True, trust_env=True)
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncHTTPTransport
        ] = weakref.WeakKeyDictionary()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = httpx.AsyncHTTPTransport(verify=self._tls)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        """A client's close: the pool stays for the next client."""
