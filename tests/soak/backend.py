"""A soak-test backend: a pure ASGI app under uvicorn on a listening socket passed as an fd.

    python tests/soak/backend.py --fd N --name b1

Endpoints: ``GET /health``, ``GET /small`` (100 bytes), ``POST /upload`` (answers the sha256 and
length of what it received), ``GET /download?n=N`` (the first N bytes of :data:`PATTERN`,
streamed), ``GET /sse?n=K`` (K events), WebSocket ``/ws`` (echo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
from frp_testing import websocket_echo

#: 1 MiB of seeded random bytes: the driver computes the same bytes to check downloads.
PATTERN = random.Random(1234).randbytes(1 << 20)
SMALL = b"s" * 100


def make_app(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await websocket_echo(receive, send)
            return
        path = scope["path"]
        query = urllib.parse.parse_qs(scope["query_string"].decode())
        if path == "/upload":
            digest = hashlib.sha256()
            n = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                digest.update(body)
                n += len(body)
                more = message.get("more_body", False)
            payload = json.dumps({"sha256": digest.hexdigest(), "n": n, "by": name}).encode()
            await _respond(send, 200, payload, b"application/json")
        elif path == "/download":
            n = min(int(query.get("n", ["0"])[0]), len(PATTERN))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-length", b"%d" % n),
                        (b"content-type", b"application/octet-stream"),
                        (b"x-backend", name.encode()),
                    ],
                }
            )
            for i in range(0, n, 65536):
                chunk = PATTERN[i : min(n, i + 65536)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/sse":
            k = int(query.get("n", ["3"])[0])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i in range(k):
                event = b"id: %d\ndata: event %d from %s\n\n" % (i, i, name.encode())
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path in ("/small", "/health"):
            await _respond(send, 200, SMALL, b"text/plain")
        else:
            await _respond(send, 404, b"not found", b"text/plain")

    return app


async def _respond(send: Any, status: int, body: bytes, ctype: bytes) -> None:
    headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.name),
        fd=args.fd,
        log_level="error",
        http="httptools",
        ws="wsproto",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
