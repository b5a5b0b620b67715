"""Settings loading shared by every signalgate service.

A service declares its settings as one pydantic model (camelCase keys, as in the YAML file);
`load_settings` resolves it once at start-up from three layers, later ones winning:
the model's defaults, the YAML file, and `SIGNALGATE_<SECTION>__<KEY>` environment variables
(case-insensitive). Every error becomes one `ConfigError` line naming the key, the value,
where it came from and what is allowed, so `serve` can print it and exit 2.

A renamed key (the model's `RENAMED_KEYS`, old dotted key → new one) is still read, in the
file and the environment, and a warning naming both is logged once logging is configured:
settings are read before logging exists, so the warnings found while reading them are
returned with them (`Resolved.notes`) and handed to `configure_logging`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from signalgate.common.secrets import hide_secrets_in

ENV_PREFIX = "SIGNALGATE_"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]i?[bB]|[bB])?\s*$", re.ASCII)
_LISTEN_RE = re.compile(
    r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]*):(?P<port>\d{1,5})$", re.ASCII
)


class ConfigError(Exception):
    """Invalid settings: the message is one line meant for the person running the service."""


@dataclass
class TranslatedFile:
    """A settings file written in another system's layout, in the service's own: the
    settings, where each came from (for error lines), and warnings to log at start-up."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> None:
        """Set the dotted `key` (the service's camelCase names) to `value`."""
        *parents, leaf = key.split(".")
        section = self.data
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
        self.origins[key] = origin


# Reads a loaded file in a foreign layout: None when the file is not in that layout.
FileTranslator = Callable[[dict[str, Any], Path, Mapping[str, str]], TranslatedFile | None]


def parse_duration(value: object) -> float:
    """`250ms`, `1s`, `5m`, `1h`, `7d` or a plain number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("is not a duration (e.g. 250ms, 1s, 5m, 1h)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise ValueError("is not a duration (e.g. 250ms, 1s, 5m, 1h)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("is not a duration (must not be negative)")
    return seconds


def parse_size(value: object) -> int:
    """`100MiB`, `512KiB`, `1GB` or a plain number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError("is not a size (e.g. 100MiB or a number of bytes)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.match(str(value))
        if not match:
            raise ValueError("is not a size (e.g. 100MiB or a number of bytes)")
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if size < 0:
        raise ValueError("is not a size (must not be negative)")
    return size


def parse_listen(value: object) -> str:
    """`host:port` (an empty host or `[::1]` allowed) with a port in 0..65535."""
    match = _LISTEN_RE.match(str(value))
    if not match or int(match.group("port")) > 65535:
        raise ValueError("is not host:port (e.g. 127.0.0.1:8080)")
    return str(value)


def check_url(value: str, schemes: tuple[str, ...], example: str, need_host: bool = True) -> str:
    """`value` as a URL a client can connect with: one of `schemes`, a valid port if any, and
    a host unless `need_host` is false (PostgreSQL's `postgresql:///db?host=/run/…` has none).
    A `ValueError` says what is wrong, with `example`."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it validates it
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc}; e.g. {example})") from None
    if parts.scheme not in schemes or (need_host and not parts.hostname):
        wanted = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"is not a {wanted} URL with a host (e.g. {example})")
    return value


def check_postgres_dsn(value: str) -> str:
    """A `postgresql://` or `postgres://` DSN that parses (the host may be in the query, for
    a Unix socket): what both services' `store.dsn` must be when it names PostgreSQL."""
    return check_url(
        value, ("postgresql", "postgres"), "postgresql://user@host:5432/db", need_host=False
    )


def split_listen(address: str) -> tuple[str, int]:
    """`127.0.0.1:8080` → ("127.0.0.1", 8080); an empty host means every interface."""
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def matching(pattern: str, words: str) -> AfterValidator:
    """A text setting that must match `pattern` whole, refused as "is not `words`": what
    the docs call it, where pydantic's own error showed the regular expression."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"is not {words}")
        return value

    return AfterValidator(check)


# a Kubernetes namespace (and any RFC 1123 label): what `controllerNamespace` and
# `kubernetes.namespace` hold
DnsLabel = Annotated[
    str,
    matching(
        r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
        "a namespace name (lowercase letters, digits and '-', starting and ending with a "
        "letter or digit, at most 63 characters; e.g. kubernaut-system)",
    ),
]
Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
ListenAddress = Annotated[str, BeforeValidator(parse_listen)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Section(BaseModel):
    """Base for settings models: camelCase keys, unknown keys refused, frozen once loaded.

    No setting is free text: a control character in a value (a NUL in a path, a newline in a
    URL) is refused here, with the key, instead of failing later in whichever library first
    meets it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, str) and _CONTROL.search(item):
                raise ValueError("must not contain control characters (a NUL, a newline, …)")
        return value


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Resolved(Generic[M]):
    """Settings, and where each one set came from (dotted key → a file's path, `environment
    variable NAME`, `command line` or the flag's name); a key at its default is absent.
    `notes`: the warnings found while reading them (a renamed key still used, a variable
    naming no setting), for `configure_logging` to log once logging exists."""

    settings: M
    origins: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def named(self, key: str) -> str:
        """`key` as the user gave it, for a message that sends them back to it: `--data-dir`,
        `environment variable SIGNALGATE_DATADIR`, `dataDir in ds.yaml`; the key itself at
        its default (or set by a caller's override without a flag)."""
        origin = self.origins.get(key)
        if origin is None or origin == "command line":
            return key
        if origin.startswith(("--", "environment variable ")):
            return origin
        return f"{key} in {origin}"


def load_settings(
    model: type[M],
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    shorthands: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    translator: FileTranslator | None = None,
) -> M:
    """Resolve `model` from defaults, the YAML file at `path`, then the environment (see
    `resolve_settings`, which also says where each setting came from)."""
    return resolve_settings(model, path, environ, shorthands, overrides, translator).settings


def resolve_settings(
    model: type[M],
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    shorthands: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    translator: FileTranslator | None = None,
    override_origins: Mapping[str, str] | None = None,
) -> Resolved[M]:
    """Resolve `model` from defaults, the YAML file at `path`, then the environment.

    `shorthands` maps extra environment names to dotted keys (`LOG_LEVEL` → `logging.level`);
    `overrides` are dotted keys set by command-line flags, applied last, each named in
    messages by its flag in `override_origins` (`--data-dir`; else "command line");
    `translator` reads a file in another system's layout (e.g. Kubernaut's), which then
    stands for the file.
    """
    environ = os.environ if environ is None else environ
    renamed: Mapping[str, str] = getattr(model, "RENAMED_KEYS", {})
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    notes: list[str] = []
    if path is not None:
        data = _read_yaml(path)
        translated = None if translator is None else translator(data, path, environ)
        if translated is not None:
            data, origins = translated.data, translated.origins
            notes.extend(translated.notes)
        else:
            _rename_in_file(data, renamed, path, notes)
            origins = {key: str(path) for key in _dotted_keys(data)}
    for name, dotted in (shorthands or {}).items():
        if name in environ:
            _apply(
                model,
                data,
                dotted.split("."),
                environ[name],
                origins,
                f"environment variable {name}",
            )
    settings = {
        name: name[len(ENV_PREFIX) :].split("__")
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
    }
    named = {_key(segments) for segments in settings.values()}
    for name, named_segments in settings.items():
        source = f"environment variable {name}"
        segments = _renamed(named_segments, renamed, source, named, notes)
        if segments is None:
            continue
        if not _apply(model, data, segments, environ[name], origins, source, strict=False):
            # not refused: the prefix is shared, so it may be the other service's
            notes.append(
                f"{source} names no setting of this service and is ignored (a typo? "
                "a setting of the other signalgate service is ignored here too)"
            )
    for dotted, value in (overrides or {}).items():
        origin = (override_origins or {}).get(dotted, "command line")
        _apply(model, data, dotted.split("."), value, origins, origin)
    try:
        return Resolved(model.model_validate(data), origins, tuple(notes))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins, model, data)) from exc


def _deprecated(old: str, new: str, source: str) -> str:
    return (
        f"config key '{old}' ({source}) is deprecated: it is now '{new}' (same meaning); "
        f"rename it, the old name will stop working"
    )


def _rename_in_file(
    data: dict[str, Any], renamed: Mapping[str, str], path: Path, notes: list[str]
) -> None:
    """Move every renamed key of the file to its new name (the new name wins if both),
    each with a warning in `notes`."""
    for old, new in renamed.items():
        *parents, leaf = old.split(".")
        section: Any = data
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or leaf not in section:
            continue
        value = section.pop(leaf)
        new_leaf = new.split(".")[-1]
        if new_leaf in section:  # the new name wins: say the old one is not read
            notes.append(_ignored(old, new, f"config file '{path}'"))
            continue
        section[new_leaf] = value
        notes.append(_deprecated(old, new, f"config file '{path}'"))


def _ignored(old: str, new: str, source: str) -> str:
    return (
        f"config key '{old}' ({source}) is ignored: '{new}', its new name, is set too; "
        "remove the old one"
    )


def _key(segments: Iterable[str]) -> tuple[str, ...]:
    """A key's segments as an environment variable's are compared (any case, `_` ignored)."""
    return tuple(segment.lower().replace("_", "") for segment in segments)


def _renamed(
    segments: list[str],
    renamed: Mapping[str, str],
    source: str,
    named: set[tuple[str, ...]],
    notes: list[str],
) -> list[str] | None:
    """An environment variable's key segments, with a renamed key's new name; None when a
    variable of the new name is set too (it wins, whatever the environment's order). Either
    is said in `notes`."""
    for old, new in renamed.items():
        if _key(old.split(".")) == _key(segments):
            if _key(new.split(".")) in named:
                notes.append(_ignored(old, new, source))
                return None
            notes.append(_deprecated(old, new, source))
            return new.split(".")
    return segments


def _yaml_error(exc: yaml.YAMLError) -> str:
    """Where and what, in one line: the parser's own text spans several (the source line and
    a caret under it) and calls the file '<unicode string>'."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f" ({exc})".replace("\n", " ")
    mark = exc.problem_mark
    text = f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context:
        text += f" ({exc.context}"
        if exc.context_mark is not None:
            text += f" from line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        text += ")"
    return text


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        # a newcomer's mistake (a path from another working directory): where it was looked
        # for, and that no file is needed at all
        raise ConfigError(
            f"config file '{path}': cannot be read ({exc.strerror}; looked for "
            f"'{path.absolute()}'): give a file that exists, or none to run on the defaults"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"config file '{path}': cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}': not UTF-8 text") from None
    try:
        _refuse_repeated_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}': not valid YAML{_yaml_error(exc)}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}': must be a mapping of settings at the top level")
    return loaded


def _refuse_repeated_keys(
    node: yaml.Node | None, path: Path, prefix: str = "", checked: set[int] | None = None
) -> None:
    """A key given twice in one mapping of the file (two `server:` blocks) is refused, naming
    it and both lines: YAML loaders keep the last and drop the first without a word, so
    half of what the operator wrote would silently not apply. Each node is looked at once:
    an alias is the node it names, and walked anew each time, nested aliases took time
    doubling with each level (23 levels: 14 s)."""
    checked = set() if checked is None else checked
    if node is None or id(node) in checked:
        return
    checked.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(item, path, prefix, checked)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
        if key is None or key == "<<":  # a merge key (`<<: *defaults`) may repeat
            continue
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"config key '{prefix}{key}' (config file '{path}'): given twice, on line "
                f"{seen[key]} and line {line}; keep one (YAML would silently drop the first)"
            )
        seen[key] = line
        _refuse_repeated_keys(value_node, path, f"{prefix}{key}.", checked)


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, dotted + "."))
    return keys


def _apply(
    model: type[BaseModel],
    data: dict[str, Any],
    segments: list[str],
    raw: Any,
    origins: dict[str, str],
    source: str,
    strict: bool = True,
) -> bool:
    """Set one environment/flag value into `data`, resolving each segment case-insensitively;
    False when it names no setting (and `strict` is off)."""
    current_model: type[BaseModel] | None = model
    target = data
    path: list[str] = []
    for index, segment in enumerate(segments):
        if current_model is None:
            return False
        found = _find_field(current_model, segment)
        if found is None:
            if strict:
                raise ConfigError(f"{source}: no setting '{'.'.join(segments)}'")
            return False  # another service's setting, or not ours: the environment is shared
        alias, annotation = found
        path.append(alias)
        if index == len(segments) - 1:
            target[alias] = _coerce_env(annotation, raw) if isinstance(raw, str) else raw
            origins[".".join(path)] = source
            return True
        child = target.get(alias)
        if not isinstance(child, dict):
            child = {}
            target[alias] = child
        target = child
        current_model = _model_of(annotation)
    return False  # no segments


def _find_field(model: type[BaseModel], segment: str) -> tuple[str, Any] | None:
    wanted = segment.lower().replace("_", "")
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if wanted in (alias.lower(), name.lower().replace("_", "")):
            return alias, info.annotation
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (Union, types.UnionType, typing.Annotated):
        return any(_is_list(arg) for arg in get_args(annotation))
    return False


def _coerce_env(annotation: Any, raw: str) -> Any:
    """Lists come as a JSON array or comma-separated; an empty value of an optional setting
    is unset (`SIGNALGATE_AUTH__TOKENSFILE=` in a manifest means none, not the directory
    `.`); everything else stays text for pydantic."""
    if raw == "" and _is_optional(annotation):
        return None
    if _is_list(annotation):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return raw  # pydantic reports it as not a list
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def _keys_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str] | None:
    """The keys of the section (or list item) at `loc`, as a file writes them."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue  # a list's index: the item's model is the list's
        found = _find_field(current, part)
        current = None if found is None else _model_of(found[1])
    if current is None:
        return None
    return [info.alias or name for name, info in current.model_fields.items()]


def _mapping_expected(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """What a section (or a list's item) must be, in the file's terms: a mapping, and its
    keys (`server: 5`, `kinds.extra: [BuildConfig]`)."""
    keys = _keys_at(model, loc)
    if keys is None:
        return "must be a mapping of settings"
    return f"must be a mapping with the keys {', '.join(keys)}"


def _unknown_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`unknown setting`, and the known key it is closest to (a key's case, a typo)."""
    given = str(loc[-1])
    keys = _keys_at(model, loc[:-1]) or []
    same_case = [key for key in keys if key.lower() == given.lower()]
    close = same_case or difflib.get_close_matches(given, keys, n=1, cutoff=0.75)
    if close:
        return f"unknown setting; did you mean {close[0]!r}?"
    return "unknown setting (see the configuration reference in README)"


def _is_optional(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


_NOT_GIVEN = object()


def _given(data: Mapping[str, Any], loc: Sequence[int | str]) -> Any:
    """The value at `loc` as it was written (file, environment or flag), before any
    validator read it; `_NOT_GIVEN` when it is not there (a default, a model-wide error)."""
    value: Any = data
    for part in loc:
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if not (in_list or (isinstance(value, Mapping) and part in value)):
            return _NOT_GIVEN
        value = value[part]
    return value


def _describe(
    exc: ValidationError,
    origins: Mapping[str, str],
    model: type[BaseModel],
    data: Mapping[str, Any],
) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        origin = origins.get(key)
        where = f" (from {origin})" if origin else ""
        return f"config key '{key}'{where}: {_unknown_key(model, error['loc'])}"
    if error["type"] == "model_type":
        # pydantic: "Input should be a valid dictionary or instance of ServerSettings"
        message = _mapping_expected(model, error["loc"])
    # pydantic's "Input should be greater than 0" reads as the docs do: "must be …"
    message = message.replace("Input should be", "must be")
    origin = origins.get(key)
    # what was written, not what a validator made of it: `processingTimeout: 0s` is '0s'
    # (pydantic's input for the bound check is the parsed 0.0)
    value = _given(data, error["loc"]) if error["loc"] else _NOT_GIVEN
    if value is _NOT_GIVEN:
        value = error.get("input")
    if error["type"] == "list_type" and isinstance(value, str):
        if (origin or "").startswith("environment"):
            message = 'must be a JSON array (["a", "b"]) or comma-separated (a,b)'
        else:
            items = ", ".join(part.strip() for part in value.split(",")) or "a, b"
            message = (
                f"must be a YAML list, e.g. [{items}] (a comma-separated string is read "
                "as a list only from an environment variable)"
            )
    where = f" (from {origin})" if origin else ""
    shown = "missing" if error["type"] == "missing" else repr(hide_secrets_in(value))
    return f"config key '{key}'{where}: {shown} {message}"
