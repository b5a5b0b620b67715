"""`{placeholder}` substitution in commands, env values, health URLs and the test command.

Known names: `{port}`, `{port.NAME}`, `{services.X.url}`, `{services.X.port}`,
`{services.X.port.NAME}`, `{artifacts}`, `{run_id}`, `{go_binary}` (in a service with
`go_build`: the binary e2ecov built). `{{` and `}}` are literal braces.
Parsing is separate from rendering so the stack file can be validated before any port is
chosen or anything is started.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Placeholder:
    """A parsed placeholder; `kind` is one of port, service_url, service_port, artifacts, run_id."""

    text: str
    kind: str
    service: str | None = None
    port_name: str | None = None


class PlaceholderError(ValueError):
    """A placeholder that is not one of the known shapes."""


def parse(text: str) -> Placeholder:
    """Classify the inside of one `{...}`; raises with the accepted shapes when unknown."""
    parts = text.split(".")
    if text == "port":
        return Placeholder(text, "port")
    if len(parts) == 2 and parts[0] == "port" and _NAME.fullmatch(parts[1]):
        return Placeholder(text, "port", port_name=parts[1])
    if text in ("artifacts", "run_id", "go_binary"):
        return Placeholder(text, text)
    if len(parts) >= 3 and parts[0] == "services" and _NAME.fullmatch(parts[1]):
        rest = parts[2:]
        if rest == ["url"]:
            return Placeholder(text, "service_url", service=parts[1])
        if rest == ["port"]:
            return Placeholder(text, "service_port", service=parts[1])
        if len(rest) == 2 and rest[0] == "port" and _NAME.fullmatch(rest[1]):
            return Placeholder(text, "service_port", service=parts[1], port_name=rest[1])
    raise PlaceholderError(
        f"unknown placeholder '{{{text}}}'; expected one of {{port}}, {{port.NAME}}, "
        "{services.X.url}, {services.X.port}, {services.X.port.NAME}, {artifacts}, {run_id}, "
        "{go_binary} "
        "(write {{ and }} for literal braces)"
    )


def find(template: str) -> Iterator[Placeholder]:
    """Every placeholder in `template`, in order (raises PlaceholderError on unknown ones)."""
    for match in _TOKEN.finditer(template):
        if match.group(1) is not None:
            yield parse(match.group(1))


@dataclass(frozen=True)
class Values:
    """What placeholders resolve to for one service (its own ports) in one run."""

    own_ports: Mapping[str, int]  # "" is {port}
    service_urls: Mapping[str, str]
    service_ports: Mapping[tuple[str, str], int]  # (service, port name or "")
    artifacts: str
    run_id: str
    go_binary: str = ""  # the binary e2ecov built from the service's go_build


def blank(template: str, filler: str = "0") -> str:
    """`template` with every placeholder as `filler` and `{{`/`}}` as the braces they stand
    for: its own text, to check (a health URL's characters) before any value is known."""

    def substitute(match: re.Match[str]) -> str:
        return match.group(0)[0] if match.group(1) is None else filler

    return _TOKEN.sub(substitute, template)


def render(template: str, values: Values) -> str:
    """Substitute every placeholder; validation has already guaranteed each one resolves."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        ph = parse(match.group(1))
        if ph.kind == "port":
            return str(values.own_ports[ph.port_name or ""])
        if ph.kind == "service_url":
            return values.service_urls[ph.service or ""]
        if ph.kind == "service_port":
            return str(values.service_ports[(ph.service or "", ph.port_name or "")])
        if ph.kind == "artifacts":
            return values.artifacts
        if ph.kind == "go_binary":
            return values.go_binary
        return values.run_id

    return _TOKEN.sub(substitute, template)
