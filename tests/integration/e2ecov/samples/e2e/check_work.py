"""Sample end-to-end test whose request makes the service start worker processes."""

from __future__ import annotations

import os
import urllib.request


def test_work() -> None:
    url = os.environ["E2E_APP_URL"] + "/work"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read().decode() == "squares [1, 4, 9] worker 21"
