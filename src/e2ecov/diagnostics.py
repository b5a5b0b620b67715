"""Diagnostics written *before* anything is stopped: what each service said and how it ended.

`diagnostics/<service>/` gets stdout/stderr, `status.json` (pid, exit code, last health
answers, URL) and `env.txt` with secrets redacted; `diagnostics/summary.txt` is one screen
that starts with the first thing that went wrong.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from e2ecov.services import ServiceRun, describe_exit

# a personal access token (GITHUB_PAT, GH_PAT) is a PAT word, not PATH's first letters; a
# webhook URL (SLACK_WEBHOOK) is a credential whatever its host
_SECRET_NAME = re.compile(
    r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|COOKIE|PRIVATE|(?:^|_)PW(?:$|_)|(?:^|_)PAT(?:$|_)|WEBHOOK",
    re.IGNORECASE,
)
# scheme://[user]:password@ — up to the last '@' before a space: a password may hold '@' or
# '/' unencoded (hiding a little of the host beats showing a secret); Redis's has no user
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)\S*@", re.IGNORECASE)
# scheme://user@ with no password: the user is the secret in a Sentry DSN (its key) and in
# a token put in a URL (https://<token>@github.com/…)
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@:\s]+@", re.IGNORECASE)
# a webhook URL is its own credential, held in its path (hooks.slack.com/services/T/B/<secret>,
# discord.com/api/webhooks/<id>/<token>, *.webhook.office.com/…): the host or a path segment
# says hook, and everything after it is hidden
_WEBHOOK_PATH = re.compile(
    r"(\bhttps?://(?:[^/\s]*hook[^/\s]*/|[^/\s]+/(?:[^/\s]+/)*?[^/\s]*hook[^/\s]*/))[^\s]+",
    re.IGNORECASE,
)
# NAME=… where the name says secret: in a query (`?`, `&`, `;`), a libpq key=value string
# (spaces around '=' too), a `--password=` flag, a `PGPASSWORD=…` inside a shell command
_PASSWORD_PARAMETER = re.compile(
    r"((?:^|[?&;\s-])[\w-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|"
    r"access[_-]?key)\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&;\s]*)",
    re.IGNORECASE,
)


def redact_value(value: str) -> str:
    """A value with the passwords of URLs and connection strings in it hidden, and the user
    of a URL with no password, and the path of a webhook URL."""
    value = _URL_PASSWORD.sub(r"\1***@", value)
    value = _URL_USER.sub(r"\1***@", value)
    value = _WEBHOOK_PATH.sub(r"\1***", value)
    return _PASSWORD_PARAMETER.sub(r"\1***", value)


def redact(name: str, value: str) -> str:
    """Hide values of secret-looking names, and passwords inside any other value."""
    if _SECRET_NAME.search(name):
        return "***" if value else ""
    return redact_value(value)


def redact_command(command: list[str]) -> list[str]:
    """A command line as diagnostics may show it: passwords inside arguments hidden, and the
    argument after a secret-looking flag (`--password X`, `--token X`)."""
    shown: list[str] = []
    previous = ""
    for argument in command:
        after_flag = previous.startswith("-") and "=" not in previous
        if after_flag and _SECRET_NAME.search(previous):
            shown.append("***")
        else:
            shown.append(redact_value(argument))
        previous = argument  # as given: a masked one must not hide the flag it was
    return shown


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
        who = f"pid {svc.pid}" if svc.pid is not None else "never started"
        summary.append(f"  {name:<16} {who}  {state}{last}")
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
