"""Bearer-token authentication with scopes, shared by the Gateway and DataStorage.

The tokens file holds `<sha256-hex-of-token> <scope>[,<scope>]` lines, so the file itself
never contains a usable secret. A presented token is hashed and compared with every entry
in constant time (no early exit), so response timing says nothing about which entry nearly
matched. Missing, malformed or unknown token → 401; a known token without the scope → 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from signalgate.common.config import ConfigError
from signalgate.common.credential_files import read_own, write_private
from signalgate.common.file_watch import RELOAD_CHECK, FileWatch, look_aside, not_a_regular_file
from signalgate.common.problems import Problem
from signalgate.common.tasks import wait_event

log = logging.getLogger(__name__)

_LINE_RE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64})\s+(?P<scopes>[A-Za-z0-9:_.,\-]+)$")
# the scheme's name in any case (RFC 9110 §11.1; the kube-apiserver takes `bearer` too, and
# some clients send it so), the token itself as RFC 6750's b64token
BEARER_RE = re.compile(r"^(?i:bearer) ([A-Za-z0-9\-._~+/]+=*)$")


SEND_BEARER = "send 'Authorization: Bearer <token>'"
# what a wrong token is told: where the tokens it is checked against come from (a setting's
# name and a file's, never a path, which would tell an anonymous caller about the host)
NOT_A_KNOWN_CALLER = (
    "unknown token: no line of the tokens file (auth.tokensFile) holds its SHA-256; "
    "without that setting, the token to send is the one in admin.token in the data directory"
)


def unauthorized(detail: str) -> Problem:
    """401, with the challenge RFC 6750 asks of it (`WWW-Authenticate: Bearer`)."""
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 when there is none."""
    if not authorization:
        raise unauthorized(f"missing Authorization header: {SEND_BEARER}")
    match = BEARER_RE.match(authorization)
    if not match:
        raise unauthorized(f"Authorization header is not 'Bearer <token>': {SEND_BEARER}")
    return match.group(1)


# The caller's identity as the cluster confirmed it (Kubernetes mode), for the audit trail's
# actor; unset for static tokens, which name no one.
authenticated_user_var: ContextVar[str | None] = ContextVar("authenticated_user", default=None)

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
TOKENS_FILE = "tokens"


@dataclass(frozen=True)
class Principal:
    """Who is calling: `anonymous` when auth is off."""

    name: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "*" not in self.scopes:
            raise Problem(403, "forbidden", f"this token lacks the scope '{scope}'")


ANONYMOUS = Principal("anonymous", frozenset({"*"}))


class Authenticator(Protocol):
    """Decides whether the caller behind an `Authorization` header may act in `scope`.

    Asynchronous because in Kubernetes mode the answer comes from the API server
    (TokenReview, then SubjectAccessReview). Raises `Problem(401)` for a missing, malformed
    or unknown token, `Problem(403)` for a known caller without the scope, and `Problem(503)`
    when the authority cannot be asked (never an open door)."""

    async def authorize(self, authorization: str | None, scope: str) -> Principal: ...


class NoAuth:
    """`auth.mode: none` — everyone may do everything; set only explicitly."""

    async def authorize(self, authorization: str | None, scope: str) -> Principal:
        return ANONYMOUS


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    scopes: frozenset[str]
    line: int


class StaticTokenAuth:
    """`auth.mode: static` — tokens from a file of hashes.

    The file is looked at every `RELOAD_CHECK` seconds while the service runs (`keep`), and
    read again once a change has held for a look (at once after a SIGHUP;
    common/file_watch.py): a token is added or revoked by editing the file (or by Kubernetes
    updating a mounted Secret), without a restart. The looks run on a timer, not on requests:
    looked at only when a request came, a change made while the service was idle was seen at
    the first request after it and taken a look later, so a revoked token was still let in
    for about a second after any quiet spell, however long ago it was revoked (an outside
    check), and a token just added was refused. A file that does not read as tokens, or
    holds none, is not taken: the tokens already loaded stay, and the error is logged once.
    """

    def __init__(
        self,
        entries: Iterable[_Entry],
        path: Path | None = None,
        known: frozenset[str] = frozenset(),
    ) -> None:
        self._entries = tuple(entries)
        self._path = path
        self._known = known
        self._watch = FileWatch(path) if path is not None else None
        self._checked = time.monotonic()
        self._forced = False
        self._wake = asyncio.Event()
        self._looking = asyncio.Lock()  # the timer's look and a request's, one at a time
        self._kept = False  # a `keep` task looks: requests never do

    @classmethod
    def from_file(cls, path: Path, known_scopes: Iterable[str] = ()) -> StaticTokenAuth:
        """Parse the tokens file; any unreadable file or bad line is a `ConfigError`, and so
        is a file holding no token (only comments, or nothing): every request would be 401
        with nothing said at start, and a reload refuses such a file too."""
        known = frozenset(known_scopes)
        entries = _read_entries(path, known)
        if not entries:
            raise ConfigError(
                f"config key 'auth.tokensFile': '{path}' holds no token: it would refuse "
                "every caller; add a line '<sha256-hex-of-token> <scope>[,<scope>]'"
            )
        return cls(entries, path, known)

    def check_soon(self) -> None:
        """Read the file now, changed or settling (a SIGHUP: the operator says it is
        written); at the next request when nothing `keep`s it."""
        self._checked = float("-inf")
        self._forced = True
        self._wake.set()

    async def keep(self) -> None:
        """Look at the file every `RELOAD_CHECK` seconds (or when asked) until cancelled."""
        self._kept = True
        while True:
            await wait_event(self._wake, RELOAD_CHECK)
            self._wake.clear()
            await self._look()

    def authenticate(self, authorization: str | None) -> Principal:
        digest = hashlib.sha256(bearer_token(authorization).encode()).digest()
        found: _Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise unauthorized(NOT_A_KNOWN_CALLER)
        return Principal(f"token@line{found.line}", found.scopes)

    async def authorize(self, authorization: str | None, scope: str) -> Principal:
        stale = time.monotonic() - self._checked >= RELOAD_CHECK
        if stale and not self._kept and not self._looking.locked():
            # nothing `keep`s the file (a command, a test); kept, the timer's looks lagged a
            # little behind each second and requests looked too, a thread each time. A look
            # already under way (blocked, on a hung mount) is not waited for
            await self._look()
        principal = self.authenticate(authorization)
        principal.require(scope)
        return principal

    async def _look(self) -> None:
        if self._watch is None:
            return
        async with self._looking:
            self._checked = time.monotonic()
            forced, self._forced = self._forced, False
            await look_aside(self._reload_if_changed, self._watch, forced)

    def _reload_if_changed(self, watch: FileWatch, forced: bool = False) -> None:
        if not watch.changed(forced):
            return
        path = watch.paths[0]
        try:
            entries = _read_entries(path, self._known)
            if not entries:
                raise ConfigError(
                    f"tokens file '{path}' holds no token: it would refuse every caller"
                )
        except ConfigError as exc:
            log.error(
                "tokens file not reloaded: the tokens loaded before stay",
                extra={"error": str(exc)},
            )
            return
        self._entries = tuple(entries)
        log.info("tokens file reloaded", extra={"path": str(path), "tokens": len(entries)})


def _read_entries(path: Path, known: frozenset[str]) -> list[_Entry]:
    if not_a_regular_file(path):
        raise ConfigError(f"config key 'auth.tokensFile': '{path}' is not a regular file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"config key 'auth.tokensFile': '{path}' cannot be read ({exc.strerror})"
        ) from exc
    except UnicodeDecodeError:
        raise ConfigError(f"config key 'auth.tokensFile': '{path}' is not UTF-8 text") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise ConfigError(
                f"tokens file '{path}' line {number}: expected "
                "'<sha256-hex-of-token> <scope>[,<scope>]'"
            )
        scopes = frozenset(s for s in match.group("scopes").split(",") if s)
        unknown = scopes - known if known else frozenset()
        if unknown:
            raise ConfigError(
                f"tokens file '{path}' line {number}: unknown scope "
                f"'{sorted(unknown)[0]}' (allowed: {', '.join(sorted(known))})"
            )
        entries.append(_Entry(bytes.fromhex(match.group("digest")), scopes, number))
    return entries


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(data_dir: Path, scopes: Iterable[str]) -> tuple[Path, Path | None]:
    """First start with no tokens file configured: make one admin token holding `scopes`.

    Returns the tokens file and, when one was made now, the file holding the admin token
    (mode 0600). The token itself is never logged; only where it is.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens_path = data_dir / TOKENS_FILE
    if read_own(tokens_path, "the generated tokens file") is not None:  # made here, or refused
        return tokens_path, None
    token_path = data_dir / ADMIN_TOKEN_FILE
    token = write_new_token(token_path)
    write_private(
        tokens_path,
        "# generated on first start: sha256 of the admin token, then its scopes\n"
        f"{hash_token(token)} {','.join(scopes)}\n",
    )
    log.warning("generated an admin token", extra={"token_file": str(token_path)})
    return tokens_path, token_path


def write_new_token(path: Path) -> str:
    """Make a random token, write it to `path` readable by the owner only, and return it."""
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def authenticator_for(
    mode: str,
    tokens_file: Path | None,
    data_dir: Path,
    scopes: tuple[str, ...],
    service: str,
    kubernetes: Callable[[], Authenticator] | None = None,
) -> Authenticator:
    """Static tokens by default (an admin token is generated on a first start with no tokens
    file); `none` only when asked for, with a warning; `kubernetes` asks the cluster
    (TokenReview + SubjectAccessReview) through the authenticator `kubernetes` makes."""
    if mode == "none":
        log.warning(f"auth.mode is none: every caller may use the {service} API")
        return NoAuth()
    if mode == "kubernetes":
        if kubernetes is None:
            raise ConfigError(
                f"config key 'auth.mode': 'kubernetes' needs the {service}'s Kubernetes "
                "settings (kubernetes.config)"
            )
        return kubernetes()
    if tokens_file is None:
        tokens_file, _ = ensure_admin_token(data_dir, scopes)
    return StaticTokenAuth.from_file(tokens_file, scopes)
