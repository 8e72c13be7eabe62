"""Local stand-ins of the model APIs the agent CLIs call, for tests with the real CLIs.

One small HTTP server answers three wire formats with a fixed reply and fixed usage:
- Anthropic Messages (`POST /v1/messages`, streamed as SSE when the request asks for
  it: message_start, content_block_start/delta/stop, message_delta, message_stop), and
  `POST /v1/messages/count_tokens`;
- OpenAI Responses (`POST /v1/responses`, streamed: response.created … response.completed);
- OpenAI Chat Completions (`POST /v1/chat/completions`, whole or streamed in chunks).
The shapes follow the providers' API references. Every request is recorded so a test can
check what the CLI sent (its key, the prompt). The server listens on the Docker bridge's
gateway address, which containers on network `bridge` reach.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker

REPLY = "Hello from the stand-in API."
INPUT_TOKENS = 21
OUTPUT_TOKENS = 9
CLAUDE_MODEL = "claude-standin-1"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]


@dataclass
class StandIn:
    url: str
    requests: list[Recorded] = field(default_factory=list)

    def to(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.route == route]

    def seen(self) -> str:
        return ", ".join(f"{r.method} {r.path}" for r in self.requests) or "no request"


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on Docker's default bridge network (the bridge interface's own
    address when the engine, like Debian's 20.10, leaves the gateway out of the IPAM)."""
    attrs = client.networks.get("bridge").attrs
    for config in attrs["IPAM"]["Config"] or []:
        gateway = config.get("Gateway")
        if isinstance(gateway, str) and "." in gateway:
            return gateway
    device = (attrs.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", device], capture_output=True, text=True
    ).stdout
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", shown)
    assert found, f"no IPv4 address on the bridge interface {device}: {shown!r}"
    return found[1]


def _sse(name: str | None, payload: dict[str, Any]) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_standin01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": OUTPUT_TOKENS,
        },
    }


def anthropic_stream(model: str) -> Iterator[bytes]:
    start = anthropic_message(model) | {"content": [], "stop_reason": None}
    start["usage"] = start["usage"] | {"output_tokens": 1}
    yield _sse("message_start", {"type": "message_start", "message": start})
    block = {"type": "text", "text": ""}
    yield _sse(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    yield _sse("ping", {"type": "ping"})
    for piece in (REPLY[:9], REPLY[9:]):
        delta = {"type": "text_delta", "text": piece}
        yield _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": OUTPUT_TOKENS},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def responses_stream(model: str) -> Iterator[bytes]:
    item_id, response_id = "msg_standin01", "resp_standin01"
    base = {"id": response_id, "object": "response", "model": model, "output": []}
    part = {"type": "output_text", "text": REPLY, "annotations": []}
    item = {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": base | {"status": "in_progress"}},
        {"type": "response.in_progress", "response": base | {"status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": item | {"status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "item_id": item_id, "output_index": 0,
         "content_index": 0, "part": part | {"text": ""}},
        {"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
         "content_index": 0, "delta": REPLY},
        {"type": "response.output_text.done", "item_id": item_id, "output_index": 0,
         "content_index": 0, "text": REPLY},
        {"type": "response.content_part.done", "item_id": item_id, "output_index": 0,
         "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": base | {
            "status": "completed",
            "output": [item],
            "usage": {
                "input_tokens": INPUT_TOKENS,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": OUTPUT_TOKENS,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
            },
        }},
    ]  # fmt: skip
    for number, event in enumerate(events):
        yield _sse(event["type"], event | {"sequence_number": number})


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin01",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        },
    }


def chat_stream(model: str) -> Iterator[bytes]:
    whole = chat_completion(model)
    chunk = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    first = {"index": 0, "delta": {"role": "assistant", "content": REPLY}}
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    yield _sse(None, chunk | {"choices": [first]})
    yield _sse(None, chunk | {"choices": [last], "usage": whole["usage"]})
    yield b"data: [DONE]\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> dict[str, Any] | None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.standin.requests.append(Recorded(self.command, self.path, headers, body))
        return body

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_standin")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.send_header("request-id", "req_standin")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
        self.close_connection = True

    def _not_found(self) -> None:
        error = {"type": "not_found_error", "message": f"no stand-in for {self.path}"}
        self._json(404, {"type": "error", "error": error})

    def do_GET(self) -> None:
        self._record()
        if self.path.split("?", 1)[0] == "/v1/models":
            self._json(200, {"object": "list", "data": []})
        else:
            self._not_found()

    def do_HEAD(self) -> None:
        self._record()
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._record() or {}
        route = self.path.split("?", 1)[0]
        asked = body.get("model")
        model = asked if isinstance(asked, str) else "standin"
        streamed = body.get("stream") is True
        if route == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": INPUT_TOKENS})
        elif route == "/v1/messages":
            if streamed:
                self._stream(anthropic_stream(model))
            else:
                self._json(200, anthropic_message(model))
        elif route == "/v1/responses":
            self._stream(responses_stream(model))
        elif route == "/v1/chat/completions":
            if streamed:
                self._stream(chat_stream(model))
            else:
                self._json(200, chat_completion(model))
        else:
            self._not_found()


@contextmanager
def serve(host: str) -> Iterator[StandIn]:
    """A stand-in listening on `host` (a free port), for the duration of the block."""
    standin = StandIn(url="")
    handler = type("Handler", (_Handler,), {"standin": standin})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    standin.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
