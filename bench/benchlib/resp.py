"""A minimal blocking RESP2 client for the harness's own control traffic: PING, INFO, DEL, SHUTDOWN.

The benchmark load itself comes from redis-benchmark, redis-cli and shoal-loadgen; this client only
checks readiness and reads server statistics, so simplicity beats speed here.
"""

import socket

MAX_LINE = 64 * 1024


class ReplyError(Exception):
    """The server answered with a RESP error (-ERR ...)."""


class ProtocolError(Exception):
    """The server sent something that is not RESP2."""


class Client:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def command(self, *args):
        """Sends one command and returns its reply; raises ReplyError for an error reply."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read(depth=0)

    def _read(self, depth: int):
        if depth > 8:
            raise ProtocolError("arrays nested too deeply")
        line = self.rfile.readline(MAX_LINE)
        if not line:
            raise ConnectionError("server closed the connection")
        if not line.endswith(b"\r\n"):
            raise ProtocolError(f"unterminated line {line[:40]!r}")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode(errors="replace")
        if kind == b"-":
            raise ReplyError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            length = int(body)
            if length < 0:
                return None
            data = self.rfile.read(length + 2)
            if len(data) != length + 2:
                raise ConnectionError("server closed the connection mid-reply")
            return data[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._read(depth + 1) for _ in range(count)]
        raise ProtocolError(f"unknown reply type {kind!r}")


def parse_info(text: bytes | str) -> dict[str, str]:
    """INFO's `field:value` lines as a dict; section headers and blank lines are skipped."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields
