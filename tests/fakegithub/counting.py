"""A bare GitHub stand-in that counts the connections it is sent on: every request is
answered with the App's identity, over HTTP/1.1 kept alive."""

from __future__ import annotations

import asyncio
import json
import ssl

APP = json.dumps({"id": 1, "slug": "trimo", "name": "Trimo"}).encode()


class CountingGitHub:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio.start_server's callback."""
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(APP), APP)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()
        except asyncio.CancelledError:  # its loop ending with connections kept alive
            writer.close()
