"""End-to-end tests of the example service: plain HTTP against the running stack.

e2ecov gives each service's address to the tests as E2E_<SERVICE>_URL.
"""

from __future__ import annotations

import os
import urllib.request


def get(path: str) -> str:
    with urllib.request.urlopen(os.environ["E2E_HELLO_URL"] + path, timeout=10) as response:
        return response.read().decode()


def test_hello_with_a_name() -> None:
    assert get("/hello?name=ada") == "hello, ada"


def test_hello_without_a_name() -> None:
    assert get("/hello") == "hello, stranger"
