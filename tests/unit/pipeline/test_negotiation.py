"""Content negotiation: which body types are read, which answer type is sent, and when an answer is gzipped."""

from __future__ import annotations

import gzip

import pytest

from gymserve.errors import UnsupportedMediaType
from gymserve.pipeline.negotiation import GZIP_MIN_BYTES, JSON, PNG, answer_type, body_type, encoded

MSGPACK = "application/msgpack"


# --- Accept ---


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),
        ("", JSON),
        (JSON, JSON),
        (MSGPACK, MSGPACK),
        ("application/x-msgpack", "application/x-msgpack"),
        ("application/vnd.msgpack", "application/vnd.msgpack"),
        ("*/*", JSON),
        ("application/*", JSON),
        ("text/html, */*;q=0.1", JSON),
        ("application/json;q=0.5, application/msgpack", MSGPACK),
        ("application/msgpack;q=0.2, application/json;q=0.9", JSON),
        ("application/json;q=0.1, application/msgpack;q=0.3", MSGPACK),
        ("*/*;q=0.1, application/msgpack", MSGPACK),
        ("application/msgpack;q=0, */*", JSON),
        ("text/html", JSON),
        ("text/html;q=1, application/msgpack;q=0.01", MSGPACK),
        ("image/png", JSON),
        ("APPLICATION/MSGPACK", MSGPACK),
        ("garbage;;;q=x", JSON),
    ],
)
def test_the_answer_type_is_the_offer_the_client_prefers_else_json(accept: str | None, chosen: str) -> None:
    assert answer_type(accept) == chosen


def test_the_answer_type_can_be_asked_among_other_offers() -> None:
    offers = (PNG, JSON)
    assert answer_type("image/*", offers) == PNG
    assert answer_type("application/json", offers) == JSON
    assert answer_type("text/html", offers) == PNG


# --- gzip ---

BIG = b'{"frame": "' + b"a" * GZIP_MIN_BYTES + b'"}'
SMALL = b"x" * (GZIP_MIN_BYTES - 1)


@pytest.mark.parametrize("accept_encoding", ["gzip", "gzip, deflate, br", "br;q=1, gzip;q=0.5", "*", "GZIP"])
def test_a_large_answer_is_gzipped_when_gzip_is_accepted(accept_encoding: str) -> None:
    body, headers = encoded(BIG, JSON, accept_encoding)
    assert gzip.decompress(body) == BIG and len(body) < len(BIG) // 10
    assert headers == [("Content-Type", JSON), ("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))]


def test_the_gzip_threshold_is_16_kib() -> None:
    assert GZIP_MIN_BYTES == 16 * 1024
    exactly = b"y" * GZIP_MIN_BYTES
    assert ("Content-Encoding", "gzip") in encoded(exactly, MSGPACK, "gzip")[1]
    body, headers = encoded(SMALL, MSGPACK, "gzip")
    assert body == SMALL and headers == [("Content-Type", MSGPACK), ("Content-Length", str(len(SMALL)))]


@pytest.mark.parametrize(
    "accept_encoding",
    [None, "", "identity", "deflate, br", "gzip;q=0", "gzip;q=0.0, deflate", "*, gzip;q=0", "*;q=0"],
)
def test_a_large_answer_is_sent_as_it_is_unless_gzip_is_accepted(accept_encoding: str | None) -> None:
    body, headers = encoded(BIG, JSON, accept_encoding)
    assert body == BIG and headers == [("Content-Type", JSON), ("Content-Length", str(len(BIG)))]


def test_a_png_is_never_gzipped_it_is_compressed_already() -> None:
    body, headers = encoded(BIG, PNG, "gzip")
    assert body == BIG and ("Content-Encoding", "gzip") not in headers


def test_gzipped_answers_are_reproducible() -> None:
    """No timestamp in the gzip header: the same answer is the same bytes (a resend, a cache)."""
    assert encoded(BIG, JSON, "gzip")[0] == encoded(BIG, JSON, "gzip")[0]


# --- the body's type ---


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "read_as"),
    [
        (None, None, JSON),
        ("", None, JSON),
        (JSON, None, JSON),
        ("application/json; charset=utf-8", None, JSON),
        ("Application/JSON", "identity", JSON),
        (MSGPACK, None, MSGPACK),
        ("application/x-msgpack", "", "application/x-msgpack"),
        ("application/vnd.msgpack", " Identity ", "application/vnd.msgpack"),
    ],
)
def test_json_and_msgpack_bodies_are_read(content_type: str | None, content_encoding: str | None, read_as: str) -> None:
    assert body_type(content_type, content_encoding) == read_as


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png"]
)
def test_another_content_type_is_415_naming_the_header(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        body_type(content_type, None)
    err = raised.value
    assert err.status == 415 and err.v1_status == 415 and err.details == {"field": "Content-Type"}
    assert content_type.split(";")[0] in err.message


@pytest.mark.parametrize("content_encoding", ["gzip", "deflate", "br", "gzip, identity"])
def test_a_compressed_body_is_415_naming_content_encoding(content_encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        body_type(JSON, content_encoding)
    assert raised.value.status == 415 and raised.value.details == {"field": "Content-Encoding"}
