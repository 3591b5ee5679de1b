"""An HTTP proxy in front of the object store that fails a share of the requests, as an
overloaded or flaky S3 endpoint does: S3's ``503 SlowDown`` answer, or a connection closed
without an answer. Each request is forwarded whole (body by Content-Length), with its headers
unchanged, so that the client's signatures still hold."""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import threading
from dataclasses import dataclass, field

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass
class FaultCounts:
    forwarded: int = 0
    slow_down: int = 0
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyProxy:
    """Listens on 127.0.0.1 (``endpoint``), forwards to ``target`` ("host:port"); a request fails
    with probability ``rate`` (half SlowDown, half dropped) while ``failing`` is set."""

    def __init__(self, target: str, rate: float = 0.2, seed: int = 0) -> None:
        self.counts = FaultCounts()
        self.failing = threading.Event()
        self.failing.set()
        host, port = target.rsplit(":", 1)
        chance = random.Random(seed)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _raw_body(self) -> bytes:
                """The request's body as it came, framing included: a chunked body (which the
                S3 client uses for its aws-chunked uploads, trailers and all) is passed on
                byte for byte."""
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                raw = []
                while True:
                    line = self.rfile.readline()
                    raw.append(line)
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailers, then the empty line
                            trailer = self.rfile.readline()
                            raw.append(trailer)
                            if trailer in (b"\r\n", b"\n", b""):
                                return b"".join(raw)
                    raw.append(self.rfile.read(size + 2))  # the data and its CRLF

            def _forward(self) -> None:
                body = self._raw_body()
                with proxy.counts.lock:
                    roll = chance.random() if proxy.failing.is_set() else 1.0
                if roll < rate / 2:
                    with proxy.counts.lock:
                        proxy.counts.slow_down += 1
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                if roll < rate:
                    with proxy.counts.lock:
                        proxy.counts.dropped += 1
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return  # closed with a reset, no answer
                upstream = http.client.HTTPConnection(host, int(port), timeout=120)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() not in {"connection", "keep-alive", "proxy-connection", "expect"}:
                            upstream.putheader(key, value)  # Transfer-Encoding too: the body keeps its framing
                    upstream.endheaders(body or None)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    # a HEAD answer's length is the object's: passed through, with no body
                    length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()
                with proxy.counts.lock:
                    proxy.counts.forwarded += 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
