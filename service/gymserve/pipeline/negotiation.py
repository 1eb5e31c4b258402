"""Content negotiation, decided once: which body types are read, which answer type is sent, when to gzip."""

from __future__ import annotations

import gzip
from functools import lru_cache

from werkzeug.datastructures import Accept, MIMEAccept
from werkzeug.http import parse_accept_header

from ..codec import values
from ..errors import UnsupportedMediaType

JSON = values.JSON
PNG = "image/png"
TEXT = "text/plain"
ANSWER_TYPES = (JSON, *values.MSGPACK_TYPES)
# Answers this large are gzipped for clients that accept it: rendered frames shrink ~100x, while a
# CartPole step (~100 bytes) would only pay the CPU. Level 1: nearly all of the gain for the least CPU.
GZIP_MIN_BYTES = 16 * 1024
GZIP_LEVEL = 1


def body_type(content_type: str | None, content_encoding: str | None) -> str:
    """The media type a /v2 body is read as (JSON when none is given), or 415 naming the header."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed",
            details={"field": "Content-Encoding"},
        )
    media_type = _media_type(content_type)
    if media_type != JSON and not values.is_msgpack(media_type):
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not supported: send application/json or application/msgpack",
            details={"field": "Content-Type"},
        )
    return media_type


def write_type(content_type: str | None, content_encoding: str | None) -> str:
    """The media type of a write's body (POST, PUT, PATCH), on any route and either API: JSON or msgpack, said
    explicitly; else 415 naming the header. Forms, text/plain and typeless bodies are what a web page may send
    to another origin without asking first (no CORS preflight): they never reach a view."""
    media_type = body_type(content_type, content_encoding)
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaType(
            "a body needs a Content-Type: send application/json or application/msgpack",
            details={"field": "Content-Type"},
        )
    return media_type


@lru_cache(maxsize=64)
def _media_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";", 1)[0].strip().lower() or JSON


@lru_cache(maxsize=256)  # clients send the same few headers on every request
def answer_type(accept: str | None, offers: tuple[str, ...] = ANSWER_TYPES) -> str:
    """The offer the client's Accept prefers; the first offer when it names none of them (or nothing)."""
    if not accept:
        return offers[0]
    return parse_accept_header(accept, MIMEAccept).best_match(offers, default=offers[0]) or offers[0]


@lru_cache(maxsize=64)
def accepts_gzip(accept_encoding: str | None) -> bool:
    return bool(accept_encoding) and parse_accept_header(accept_encoding, Accept)["gzip"] > 0


def encoded(body: bytes, media_type: str, accept_encoding: str | None) -> tuple[bytes, list[tuple[str, str]]]:
    """The answer's bytes and headers: gzipped when large, compressible and accepted."""
    headers = [("Content-Type", media_type)]
    if len(body) >= GZIP_MIN_BYTES and media_type != PNG and accepts_gzip(accept_encoding):
        body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    return body, headers
