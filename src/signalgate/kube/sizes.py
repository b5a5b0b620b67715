"""How many bytes an object takes as the API server stores it, which is not what a client
sends: what counts against etcd's bound on one object.

The API server writes objects with Go's `encoding/json`, which escapes `<`, `>` and `&`
(as `\\u003c` …) and U+2028/U+2029 (as `\\u2028`), where a client's JSON (orjson's, most
senders') writes them as they are. An alert of 200,000 `<` is 200 KB as sent and 1.2 MB as
stored, twice over in an RR (its annotations and its original payload): etcd refused the
2.4 MB object (an outside check), and no retry could change that.
"""

from __future__ import annotations

# what etcd takes in one request by default (`--max-request-bytes`, 1.5 MiB): the whole
# object as the API server writes it; the API server's own bound on a request body (3 MiB)
# and its gRPC client's to etcd (2 MiB) are larger
ETCD_MAX_REQUEST_BYTES = 1_572_864

# bytes of the characters Go escapes, and how many more each takes escaped (6 bytes each)
_ESCAPED_GROWTH = {b"<": 5, b">": 5, b"&": 5, "\u2028".encode(): 3, "\u2029".encode(): 3}


def stored_json_size(encoded: bytes) -> int:
    """The size of JSON text `encoded` (UTF-8, as orjson writes it, unescaped) once the API
    server writes it again; for text stored inside a JSON string (an RR's original payload),
    the size of that text as stored, before its quotes and backslashes are escaped once more
    (which at most doubles them, as for any client)."""
    return len(encoded) + sum(
        encoded.count(char) * growth for char, growth in _ESCAPED_GROWTH.items()
    )
