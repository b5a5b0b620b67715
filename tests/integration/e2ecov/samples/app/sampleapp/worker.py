"""A worker program the service runs as a python subprocess."""

from __future__ import annotations

import sys


def triple(number: int) -> int:
    return number * 3


if __name__ == "__main__":
    print(triple(int(sys.argv[1])))
