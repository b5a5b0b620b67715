"""The README's shell examples, run as written against `signalgate up`, answer what they promise.

The `sh` blocks of "Send it an alert" run in one bash, those of "The audit trail" in a second
one that gets `$TOKEN` and `$RR` from the first (the README says to use the same shell). The
only change made to them is the port: `signalgate up` runs on a free block of ports instead of
8080/8090. Promises are the README's `# → …` comment lines: a bare status code (`# → 201`)
must be the status printed, in order; a JSON line's literal `"key":value` pairs must appear in
one line of the output, in order of the promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.up import Up, signalgate_up

README = Path(__file__).resolve().parents[3] / "README.md"
ALERT_SECTION = "## Send it an alert"
AUDIT_SECTION = "## The audit trail (DataStorage)"
CODE_PROMISE = re.compile(r"^#.*→ (\d{3})$")
JSON_PROMISE = re.compile(r"^#.*→ (\{.*)$")
# a literal pair: values holding "…" are placeholders and promise nothing
PAIR = re.compile(r'"[A-Za-z_]+":(?:"[^"…]*"|-?\d+|true|false|null)(?=[,}\]])')


def section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same level."""
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    end = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def script_of(heading: str, up: Up) -> str:
    blocks = shell_blocks(section(README.read_text(), heading))
    assert blocks, f"README section {heading!r} has no sh example"
    script = "\n".join(blocks)
    return script.replace("127.0.0.1:8080", f"127.0.0.1:{up.base}").replace(
        "127.0.0.1:8090", f"127.0.0.1:{up.base + 10}"
    )


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def check_promises(script: str, output: str) -> None:
    promised_codes, promised_pairs = [], []
    for line in script.splitlines():
        line = line.strip()
        if code := CODE_PROMISE.match(line):
            promised_codes.append(code.group(1))
        elif body := JSON_PROMISE.match(line):
            promised_pairs.append(PAIR.findall(body.group(1)))
    printed_codes = [line for line in output.splitlines() if re.fullmatch(r"\d{3}", line)]
    assert printed_codes == promised_codes, output
    lines = output.splitlines()
    cursor = 0
    for pairs in promised_pairs:
        assert pairs, "a JSON promise with nothing literal in it"
        found = next(
            (i for i in range(cursor, len(lines)) if all(p in lines[i] for p in pairs)), None
        )
        assert found is not None, f"no answer holds {pairs} after line {cursor}:\n{output}"
        cursor = found + 1


def wait_for_audit(up: Up, token: str, rr: str, events: int) -> None:
    """The Gateway sends audit events in batches: wait (15 s at most) until `events` arrived."""
    deadline = time.monotonic() + 15
    total = 0
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"http://127.0.0.1:{up.base + 10}/api/v1/audit/events",
            params={"correlation_id": rr},
            headers={"Authorization": f"Bearer {token}"},
        )
        total = answer.json()["pagination"]["total"]
        if total >= events:
            return
        time.sleep(0.2)
    raise AssertionError(f"{total} audit events for {rr}, expected {events}")


def test_the_readme_examples_answer_what_they_promise(tmp_path: Path) -> None:
    with signalgate_up(tmp_path) as up:
        alert_script = script_of(ALERT_SECTION, up)
        output = run_bash(alert_script + '\necho "RR=$RR"\n', tmp_path, {})
        check_promises(alert_script, output)
        rr = output.splitlines()[-1].removeprefix("RR=")
        assert rr.startswith("rr-"), output

        audit_script = script_of(AUDIT_SECTION, up)
        promised = re.search(r'"events":(\d+)', audit_script)
        assert promised, "the audit example promises a number of events"
        wait_for_audit(up, up.token, rr, int(promised.group(1)))
        output = run_bash(audit_script, tmp_path, {"TOKEN": up.token, "RR": rr})
        check_promises(audit_script, output)
    assert up.exit_code == 0, up.output()
