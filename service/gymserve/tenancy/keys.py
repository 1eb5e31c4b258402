"""New API keys: a random key for the tenant, and the line of the tenants file that holds its digest."""

from __future__ import annotations

import secrets

from .tenants import NAME_PATTERN, digest_of

PREFIX = "gs_"  # recognisable in a leaked log or a secret scanner's rules


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def file_entry(name: str, key: str) -> str:
    """The TOML of a tenant whose one key is `key` (its digest only: the file never holds a key)."""
    return f'[tenants.{name}]\nkey_sha256 = ["{digest_of(key).hex()}"]\n'


__all__ = ["NAME_PATTERN", "file_entry", "new_key"]
