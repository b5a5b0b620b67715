"""Diagnostics written *before* anything is stopped: what each service said and how it ended.

`diagnostics/<service>/` gets stdout/stderr, `status.json` (pid, exit code, last health
answers, URL, command line) and `env.txt` with secrets redacted; `diagnostics/summary.txt` is
one screen that starts with the first thing that went wrong.

Redaction rules (docs/e2ecov.md repeats them):

- A **name** is cut into words at `_`, `-` and `.`. Its value is hidden when a word is a
  secret word (`PASS`, `PW`, `PAT`, `AUTH`, `KEY`, `CREDS`, `PRIVATE`, `BEARER`, `JWT`) or
  ends with one (`PASSWORD`, `PASSWD`, `PASSPHRASE`, `PWD`, `SECRET`, `TOKEN`, `KEY`,
  `CREDENTIAL`, `COOKIE`, `WEBHOOK`, their plurals): `MYSQL_PWD`, `APIKEY`, `DB_PASS`.
  A word that merely starts like one is no secret (`KEYCLOAK`, `KEYSPACE`, `AUTHOR`,
  `TOKENIZERS`, `PASSENGER`, `BYPASS`, `OAUTH`). A name whose last word says *where* a
  secret is rather than what (`FILE`, `PATH`, `DIR`, `SOCK`, `URL`, `URI`, `HOST`, `PORT`,
  `NAME`, `EMAIL`: `PASSWORD_FILE`, `SSH_AUTH_SOCK`, `PUBLIC_KEY_URL`) is not hidden whole,
  unless it names a webhook (a webhook URL is its own credential). `PWD` and `OLDPWD` are
  the working directory. A `--flag=value` argument is judged by the same rule as the
  `--flag value` form.
- In **every other value**: a URL's password (its userinfo ends before the host: a `:port/`
  is no password) and its user when it has no password (a Sentry DSN's key; ssh's `git@` is
  shown); a webhook URL's path on a webhook host (one whose name says hook, Discord's
  `/api/webhooks/`, Office's `/webhook/`) and, on any other host, a long token-like path
  segment after a `hook` segment; a Telegram bot token (`/bot<id>:<token>`); parameters
  whose name says secret (`password=`, `pwd=`, `token=`, `AccountKey=`, `sig=`, `key=`, JSON
  `"private_key": "…"`); an `Authorization:` header's credentials and a `Bearer` token; a
  PEM private key block; a JWT; tokens with a well-known prefix (`ghp_`, `glpat-`, `xoxb-`,
  `sk-`, `AKIA`, `AIza`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from e2ecov.services import ServiceRun, describe_exit

# a word that is one of these, whole
_SECRET_WORDS = frozenset({"PASS", "PW", "PAT", "AUTH", "KEY", "CREDS", "PRIVATE", "BEARER", "JWT"})
# a word that ends with one of these (plural 'S' allowed): DBPASSWORD, MYSQL_PWD, APIKEY
_SECRET_ENDINGS = (
    "PASSWORD", "PASSWD", "PASSPHRASE", "PWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL",
    "COOKIE", "WEBHOOK",
)  # fmt: skip
# the last word says where a secret is, not what it is: a file, a socket, an address
_LOCATION_WORDS = frozenset(
    {"FILE", "PATH", "DIR", "SOCK", "SOCKET", "URL", "URI", "HOST", "PORT", "NAME", "EMAIL"}
)
# the shell's working directories: PWD is a word, not a password
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})


def _secret_word(word: str) -> bool:
    stem = word[:-1] if word.endswith("S") and len(word) > 1 else word
    if word in _SECRET_WORDS:
        return True
    return any(w.endswith(ending) for w in (word, stem) for ending in _SECRET_ENDINGS)


def secret_name(name: str) -> bool:
    """Whether a variable (or flag) name says its value is a secret (the module's rule)."""
    upper = name.upper().lstrip("-")
    if upper in _NOT_SECRET_NAMES:
        return False
    words = [w for w in re.split(r"[_.\-]+", upper) if w]
    if not any(_secret_word(w) for w in words):
        return False
    # WEBHOOK_URL is the credential itself; KEY_FILE, AUTH_SERVER_URL only point at one
    return any("WEBHOOK" in w for w in words) or words[-1] not in _LOCATION_WORDS


# scheme://[user]:password@host — the password may hold '@' or '/' unencoded, so it ends at
# the '@' followed by a host (no '@' before the next '/', '?', '#' or the end); a ':port/'
# after the host is no password (http://h:8080/users/@me keeps its path)
_URL_PASSWORD = re.compile(
    r"(\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)(?!\d+(?:[/?#\s]|$))\S*?@(?=[^@\s/?#]*(?:[/?#\s]|$))",
    re.IGNORECASE,
)
# scheme://user@ with no password: the user is the secret in a Sentry DSN (its key) and in
# a token put in a URL (https://<token>@github.com/…); ssh's conventional 'git' user is not
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)(?!git@)[^/@:\s]+@", re.IGNORECASE)
_URL = re.compile(r"\bhttps?://[^\s'\"]+", re.IGNORECASE)
# a host that says hook is a webhook service (hooks.slack.com, *.webhook.office.com): all of
# its path is the credential; Discord and Office keep theirs after a segment that says hook
_HOOK = re.compile(r"hook", re.IGNORECASE)
_HOOK_AFTER_SEGMENT_HOSTS = re.compile(
    r"(?:^|\.)(?:discord\.com|discordapp\.com|office\.com|office365\.com)$", re.IGNORECASE
)
# a path segment that looks like a generated secret: long, letters and digits mixed
_TOKEN_SEGMENT = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_-]{16,}$")
_TELEGRAM_BOT = re.compile(r"(/bot\d+:)[\w-]+")
# NAME=… where the name says secret: in a query (`?`, `&`, `;`), a libpq key=value string
# (spaces around '=' too), a `--password=` flag, a `PGPASSWORD=…` inside a shell command,
# an Azure connection string's `AccountKey=`/`SharedAccessKey=`, a SAS URL's `sig=`, a
# Google API `key=`
_PASSWORD_PARAMETER = re.compile(
    r"((?:^|[?&;\s-])[\w-]*(?:password|passwd|passphrase|pwd|secret|token|key)\s*=\s*|"
    r"(?:^|[?&;\s])(?:sig|signature)\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&;\s]*)",
    re.IGNORECASE,
)
# "password": "…" in a JSON value (a service account's "private_key")
_JSON_SECRET = re.compile(
    r"(\"[\w-]*(?:password|passwd|secret|token|private_key|api_key|apikey)\"\s*:\s*\")"
    r"(?:[^\"\\]|\\.)*\"",
    re.IGNORECASE,
)
# a header's credentials (Authorization: Bearer X, Authorization=Basic X) and a bare Bearer X
_AUTHORIZATION = re.compile(
    r"(\b(?:proxy-)?authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?|\bbearer\s+)"
    r"[^\s'\"]+",
    re.IGNORECASE,
)
_PEM_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----).*?(?:(-----END [A-Z0-9 ]*PRIVATE KEY-----)|$)",
    re.DOTALL,
)
_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_PREFIXED_TOKEN = re.compile(
    r"\b(?:gh[pousr]_|github_pat_|glpat-|xox[abprs]-|sk-|sk_live_|rk_live_|AKIA|ASIA|AIza)"
    r"[\w-]{10,}"
)


def _redact_url_path(match: re.Match[str]) -> str:
    url = match.group(0)
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not slash:
        return url
    host = authority.rsplit("@", 1)[-1].split(":", 1)[0]
    if _HOOK.search(host):
        return f"{scheme}://{authority}/***"
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if not _HOOK.search(segment):
            continue
        if _HOOK_AFTER_SEGMENT_HOSTS.search(host):
            return f"{scheme}://{authority}/" + "/".join([*segments[: index + 1], "***"])
        # an ordinary host (a local Gateway's /webhooks/alertmanager/prod) keeps its path but
        # a segment after the hook one that looks generated
        segments[index + 1 :] = [
            "***" if _TOKEN_SEGMENT.match(s.split("?", 1)[0]) else s for s in segments[index + 1 :]
        ]
        return f"{scheme}://{authority}/" + "/".join(segments)
    return url


def redact_value(value: str) -> str:
    """A value with the secrets inside it hidden (the module's rules for any value)."""
    value = _PEM_PRIVATE_KEY.sub(lambda m: f"{m.group(1)}***{m.group(2) or ''}", value)
    value = _URL_PASSWORD.sub(r"\1***@", value)
    value = _URL_USER.sub(r"\1***@", value)
    value = _URL.sub(_redact_url_path, value)
    value = _TELEGRAM_BOT.sub(r"\1***", value)
    value = _JSON_SECRET.sub(r'\1***"', value)
    value = _AUTHORIZATION.sub(r"\1***", value)
    value = _JWT.sub("***", value)
    value = _PREFIXED_TOKEN.sub("***", value)
    return _PASSWORD_PARAMETER.sub(r"\1***", value)


def redact(name: str, value: str) -> str:
    """Hide values of secret-looking names, and the secrets inside any other value."""
    if secret_name(name):
        return "***" if value else ""
    return redact_value(value)


def redact_command(command: list[str]) -> list[str]:
    """A command line as diagnostics may show it: secrets inside arguments hidden, the value
    of a secret-looking flag in both forms (`--password X`, `--db-pass=X`)."""
    shown: list[str] = []
    previous = ""
    for argument in command:
        after_flag = previous.startswith("-") and "=" not in previous
        flag, equals, _ = argument.partition("=")
        if after_flag and secret_name(previous):
            shown.append("***")
        elif argument.startswith("-") and equals and secret_name(flag):
            shown.append(f"{flag}=***")
        else:
            shown.append(redact_value(argument))
        previous = argument  # as given: a masked one must not hide the flag it was
    return shown


def redact_ledgers(ledger_dir: Path) -> None:
    """The processes' ledger files (`processes/*.jsonl`) with each start record's command
    line redacted as diagnostics show it: the agents write the raw `argv`, and a
    `--db-pass=…` sat in the artifacts a CI job uploads (an outside check). Only once no
    process of the stack runs: an agent appending meanwhile would lose its line."""
    if not ledger_dir.is_dir():
        return
    for path in sorted(ledger_dir.glob("*.jsonl")):
        lines = path.read_text(errors="replace").splitlines()
        shown = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                shown.append(line)  # a torn line stays as it is (reading skips it)
                continue
            argv = event.get("argv") if isinstance(event, dict) else None
            if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
                event["argv"] = redact_command(argv)
                line = json.dumps(event)
            shown.append(line)
        if shown != lines:
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text("".join(f"{line}\n" for line in shown))
            temporary.replace(path)


def write(
    artifacts: Path,
    services: dict[str, ServiceRun],
    first_failure: str,
    more: list[str],
    test_log: Path | None = None,
) -> Path:
    """Write diagnostics/ and return the summary file."""
    root = artifacts / "diagnostics"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # services' output and environments: the run's user's alone
    summary = ["FIRST FAILURE:", f"  {first_failure}", ""]
    summary += [f"also: {line}" for line in more]
    summary += ["", "services:"]
    for name, svc in services.items():
        target = root / name
        target.mkdir(exist_ok=True)
        for source, label in ((svc.stdout_path, "stdout.log"), (svc.stderr_path, "stderr.log")):
            if source.is_file():
                shutil.copyfile(source, target / label)
        code = svc.poll()
        state = (
            "not started"
            if svc.started is None
            else ("running" if code is None else describe_exit(code))
        )
        if svc.failure:
            state += " — FAILED"
        status = {
            "service": name,
            "pid": svc.pid,
            "url": svc.url,
            "state": state,
            "exit_code": code,
            "started": svc.started,
            "ready": svc.ready,
            "last_health_answers": list(svc.health_answers),
            "failure": svc.failure,
            "command": redact_command(svc.command),
        }
        (target / "status.json").write_text(json.dumps(status, indent=2) + "\n")
        env_lines = [f"{k}={redact(k, v)}" for k, v in sorted(svc.env.items())]
        (target / "env.txt").write_text("\n".join(env_lines) + "\n")
        last = f", last health: {svc.health_answers[-1]}" if svc.health_answers else ""
        # a service never started has no pid: its state says so ("never started  not
        # started" said it twice)
        who = f"pid {svc.pid}  " if svc.pid is not None else ""
        summary.append(f"  {name:<16} {who}{state}{last}")
    if test_log is not None and test_log.is_file():
        shutil.copyfile(test_log, root / "tests.log")
        summary += ["", "last lines of the test output:"]
        summary += ["  " + line for line in test_log.read_text(errors="replace").splitlines()[-15:]]
    summary += [
        "",
        # beside this file wherever the run's files end up (failed-run/ after a failed run)
        "details: <service>/ beside this summary (stdout.log, stderr.log, status.json, env.txt)",
    ]
    path = root / "summary.txt"
    path.write_text("\n".join(summary) + "\n")
    return path


def append(artifacts: Path, lines: list[str]) -> None:
    """Add what was learnt after the services were stopped (e.g. coverage lost) to the summary."""
    path = artifacts / "diagnostics" / "summary.txt"
    if lines and path.is_file():
        with path.open("a") as handle:
            handle.write("\nafter the stack was stopped:\n")
            handle.writelines(f"also: {line}\n" for line in lines)
