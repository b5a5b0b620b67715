"""Secrets kept out of what the services show: logs, error lines, `/readyz`, `check-config`.

Settings that name a server (`store.dsn`, `datastorage.url`, `dlq.redisUrl`) may carry its
password in any of the forms their clients take: a URL's `user:password@` (Redis's is often
`redis://:password@`), a query parameter (`?password=`, libpq's `sslpassword`), or libpq's
`key=value` form (`host=db password=…`). One function hides all of them, so a line that
shows such a value shows where it points and never what opens it.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://[user]:password@ — the password up to the line's last '@' (a password may hold
# '@', '/' or a space unencoded; hiding a little more of a line beats showing a secret)
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)(?P<secret>[^\n]*)@", re.I)
# password=…, in a query (`?`, `&`, `;`) or in a key=value string (start, space)
_PARAMETER = re.compile(
    r"(?P<head>(?:^|[?&;\s])(?:password|passwd|pwd|sslpassword|secret|token|api[_-]?key)\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|[^&;\s]*)",
    re.I,
)


def hide_secrets(text: str) -> str:
    """`text` with every password-like part of a URL or connection string masked."""
    text = _USERINFO.sub(rf"\g<head>{MASK}@", text)
    return _PARAMETER.sub(rf"\g<head>{MASK}", text)


def hide_secrets_in(value: Any) -> Any:
    """`hide_secrets` over every string in a JSON-like value (a resolved configuration)."""
    if isinstance(value, str):
        return hide_secrets(value)
    if isinstance(value, dict):
        return {key: hide_secrets_in(item) for key, item in value.items()}
    if isinstance(value, list):
        return [hide_secrets_in(item) for item in value]
    return value
