"""Secrets the server reads: from GYMSERVE_<NAME>, or from the file GYMSERVE_<NAME>_FILE names (a mounted Secret, or
a volume that compose's keygen service wrote once). Never from Settings, so they are never printed or logged."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .settings import SettingsError

# Every secret gymserve reads (each also as <name>_FILE): the farm's signing key and the store's password.
VARIABLES = ("GYMSERVE_SNAPSHOT_KEY", "GYMSERVE_STORE_PASSWORD")


def read(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret in `variable`, else in the file `variable`_FILE names; "" when neither is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(variable, "")
    path = environ.get(variable + "_FILE", "")
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as source:
            return source.read().strip()
    except OSError as exc:
        raise SettingsError(f"{variable}_FILE: cannot read the secret: {exc}") from None
