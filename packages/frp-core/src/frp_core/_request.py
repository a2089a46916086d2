"""Incoming-request checks and the upstream request-target.

The target is built from bytes, never parsed as a URL: the upstream scheme, host and port come
from the configured base URL only, and nothing in the path can change them.  Dot-segments are
never resolved (``/a/../b`` is forwarded as is; resolving them is the upstream's business).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["BadRequest", "build_target", "check_framing", "encode_path", "strip_prefix"]


class BadRequest(Exception):
    """The request is ambiguous or unsafe to forward: answer 400 with ``Connection: close``."""


_DIGITS = re.compile(rb"[0-9]+")
#: Limits on the request head (nginx answers 400 beyond its header buffers, too).
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 256
#: Bytes that may not appear in a request-target: controls, space, DEL and non-ASCII.
_UNSAFE_TARGET = re.compile(rb"[^\x21-\x7e]")
#: The scheme and authority of an absolute-form request-target (RFC 9112 §3.2.2), which
#: uvicorn's h11 server passes on in ``raw_path``; httptools passes the path alone.
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: RFC 3986 pchar (unreserved, sub-delims, ":" "@") plus "/": kept verbatim in caller paths.
_PATH_SAFE = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
)
#: Query characters kept verbatim in a caller-supplied query.
_QUERY_SAFE = _PATH_SAFE | frozenset(b"?")


def check_framing(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """``(content_length, chunked)`` of the request body, or :class:`BadRequest`.

    Refused: several ``Content-Length`` headers, a non-numeric one, ``Transfer-Encoding``
    together with ``Content-Length``, any ``Transfer-Encoding`` other than one ``chunked``, and
    heads over :data:`MAX_HEADERS` fields or :data:`MAX_HEADER_BYTES` bytes.
    """
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many header fields")
    size = 0
    length: int | None = None
    lengths = 0
    chunked = False
    encodings = 0
    for name, value in headers:
        size += len(value)
        if name == b"content-length":
            lengths += 1
            value = value.strip(b" \t")
            if lengths > 1 or not _DIGITS.fullmatch(value):
                raise BadRequest("invalid Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            encodings += 1
            if encodings > 1 or value.strip(b" \t").lower() != b"chunked":
                raise BadRequest("invalid Transfer-Encoding")
            chunked = True
    if lengths and encodings:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if size > MAX_HEADER_BYTES:
        raise BadRequest("request head too large")
    return length, chunked


def _encode(text: str, safe: frozenset[int]) -> bytes:
    out = bytearray()
    raw = text.encode("utf-8")
    n = len(raw)
    i = 0
    while i < n:
        c = raw[i]
        if c in safe:
            out.append(c)
        elif c == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out += raw[i : i + 3]  # an existing %XX escape stays as it is
            i += 3
            continue
        else:
            out += b"%%%02X" % c
        i += 1
    return bytes(out)


def encode_path(path: str) -> bytes:
    """Percent-encode a caller-supplied path (a ``?`` starts its query, as in 0.4.0)."""
    if not path.startswith("/"):
        path = "/" + path
    head, sep, query = path.partition("?")
    encoded = _encode(head, _PATH_SAFE)
    if sep:
        encoded += b"?" + _encode(query, _QUERY_SAFE)
    return encoded


def _decoded_index(raw: bytes) -> tuple[bytes, list[int]]:
    """Percent-decode ``raw``; also return, per decoded byte, where it starts in ``raw``."""
    out = bytearray()
    starts: list[int] = []
    i, n = 0, len(raw)
    while i < n:
        starts.append(i)
        if raw[i] == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out), starts


def strip_prefix(raw: bytes, prefix: str) -> bytes | None:
    """``raw`` without the leading part that percent-decodes to ``prefix`` (None: no match)."""
    if not prefix:
        return raw
    want = prefix.encode("utf-8")
    if raw.startswith(want):
        return raw[len(want) :]
    decoded, starts = _decoded_index(raw)
    if not decoded.startswith(want):
        return None
    return raw[starts[len(want)] :] if len(want) < len(starts) else b""


def raw_tail(raw: bytes, path: str) -> bytes | None:
    """The tail of ``raw`` that percent-decodes to ``path``, if there is one.

    Decoded as the server decoded ``scope["path"]`` (``unquote``: UTF-8, invalid bytes as
    U+FFFD), so ``%80`` or ``%E9`` in the raw path are kept as sent.  The tail starts at a
    literal ``/``.
    """
    want = path.encode("utf-8")
    if raw.endswith(want):
        return raw[len(raw) - len(want) :]
    if b"%" not in raw:
        return None
    end = len(raw)
    for _ in range(len(raw)):  # bounded: one candidate per literal "/", right to left
        start = raw.rfind(b"/", 0, end)
        if start < 0:
            return None
        decoded = unquote(raw[start:].decode("latin-1"))
        if decoded == path:
            return raw[start:]
        if len(decoded) > len(path):
            return None
        end = start
    return None


def build_target(
    scope: Mapping[str, Any],
    prefix: bytes,
    path: str | None,
    forward_query: bool,
    *,
    strip_root: bool = False,
) -> bytes:
    """The upstream request-target: base prefix + path (+ ``?`` + query), all as bytes.

    ``path=None`` forwards the incoming raw path (minus ``root_path`` when ``strip_root``); a
    caller path equal to the decoded tail of the raw path forwards that raw tail; any other
    caller path is percent-encoded.  Raises :class:`BadRequest` for bytes that cannot appear in
    a request line.
    """
    raw: bytes = scope.get("raw_path") or _encode(scope.get("path") or "/", _PATH_SAFE)
    if not raw.startswith(b"/"):
        # absolute-form: forward its path (the authority never picks the upstream);
        # authority-form (CONNECT) and asterisk-form (OPTIONS *) are not proxied
        absolute = _ABSOLUTE_FORM.match(raw)
        if absolute is None:
            raise BadRequest("invalid request-target")
        raw = raw[absolute.end() :] or b"/"
    if path is None:
        if strip_root:
            root = scope.get("root_path") or ""
            tail = strip_prefix(raw, root)
            raw = raw if tail is None else tail
        tpath = raw
    else:
        tail = raw_tail(raw, path) if path.startswith("/") else None
        tpath = tail if tail is not None else encode_path(path)
    if not tpath.startswith(b"/"):
        tpath = b"/" + tpath
    target = prefix + tpath
    if forward_query:
        query: bytes = scope.get("query_string") or b""
        if query:
            target += (b"&" if b"?" in tpath else b"?") + query
    if _UNSAFE_TARGET.search(target):
        raise BadRequest("invalid request-target")
    return target
