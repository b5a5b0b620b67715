"""Sample end-to-end tests: each drives one endpoint of the sample service over HTTP."""

from __future__ import annotations

import os
import urllib.request


def _get(path: str) -> str:
    with urllib.request.urlopen(os.environ["E2E_APP_URL"] + path, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def test_alpha() -> None:
    assert _get("/alpha") == "alpha 3"


def test_beta() -> None:
    assert _get("/beta") == "beta"
