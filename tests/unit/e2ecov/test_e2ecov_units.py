"""Small parts: placeholders, core choice, loss judgement, function report, redaction, ports."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2ecov import (
    collect,
    diagnostics,
    doctor,
    gocover,
    placeholders,
    protocol,
    pytest_plugin,
    recipes,
    reports,
)
from e2ecov.agent import Settings, choose_core, hook_first
from e2ecov.errors import UsageError
from e2ecov.progress import Progress
from e2ecov.protocol import ProcessRecord


def test_placeholders_render_and_escape() -> None:
    values = placeholders.Values(
        {"": 1000, "ops": 1001}, {"db": "postgresql://x"}, {("db", ""): 5432}, "/a", "r1"
    )
    template = (
        "{{literal}} {port} {port.ops} {services.db.url} {services.db.port} {artifacts} {run_id}"
    )
    assert placeholders.render(template, values) == "{literal} 1000 1001 postgresql://x 5432 /a r1"
    with pytest.raises(
        placeholders.PlaceholderError, match=re.escape("unknown placeholder '{ports}'")
    ):
        list(placeholders.find("{ports}"))


@pytest.mark.parametrize(
    ("contexts", "branch", "version", "core"),
    [
        (True, False, (3, 11), "ctrace"),
        (True, False, (3, 13), "ctrace"),  # contexts need ctrace, even where sysmon is default
        (False, False, (3, 11), "ctrace"),
        (False, False, (3, 12), "sysmon"),
        (False, True, (3, 12), "ctrace"),  # sysmon cannot measure branches before 3.14
        (False, True, (3, 14), "sysmon"),
    ],
)
def test_core_choice(contexts: bool, branch: bool, version: tuple[int, int], core: str) -> None:
    assert choose_core(contexts, branch, version) == core


def _record(*saves: dict[str, object]) -> ProcessRecord:
    return ProcessRecord("gateway", 4242, 1, 100.0, "/d/f", "ctrace", "3.11", list(saves))


def test_judge_each_outcome() -> None:
    killed = {4242: "was killed by SIGKILL"}
    lost = collect.judge(_record(), 200.0, killed)
    assert lost.status == "lost" and lost.is_loss
    assert (
        lost.message == "gateway pid 4242 wrote no coverage: was killed by SIGKILL before it saved"
    )
    partial = collect.judge(
        _record({"event": "save", "reason": "autosave", "time": 150.0, "measured": 3}),
        200.0,
        killed,
    )
    assert partial.status == "partial" and partial.is_loss and "last saved at" in partial.message
    live = collect.judge(
        _record({"event": "save", "reason": "save", "time": 201.0, "measured": 3}), 200.0, killed
    )
    assert live.status == "saved" and not live.is_loss
    at_exit = collect.judge(
        _record({"event": "save", "reason": "exit", "time": 120.0, "measured": 2}), 200.0, {}
    )
    assert at_exit.status == "saved"
    empty = collect.judge(
        _record({"event": "save", "reason": "sigterm", "time": 220.0, "measured": 0}), 200.0, {}
    )
    assert (
        empty.status == "empty"
        and not empty.is_loss
        and "measured nothing under source" in empty.message
    )
    assert collect.silent_services(["gateway", "worker"], [live])[0].startswith(
        "worker: no process announced"
    )


def test_ledger_skips_torn_lines_and_foreign_pids(tmp_path: Path) -> None:
    ledger = tmp_path / "gateway.4242.ab.jsonl"
    protocol.append_record(ledger, {"event": "start", "service": "gateway", "pid": 4242, "ppid": 1,
                                    "time": 1.0, "data_file": "f", "core": "ctrace"})  # fmt: skip
    protocol.append_record(
        ledger, {"event": "save", "pid": 4242, "time": 2.0, "reason": "save", "measured": 1}
    )
    protocol.append_record(
        ledger, {"event": "save", "pid": 9999, "time": 3.0, "reason": "exit", "measured": 1}
    )
    with open(ledger, "a") as handle:
        handle.write('{"event": "save", "ti')
    [record] = protocol.read_ledger(tmp_path)
    assert record.pid == 4242 and [s["time"] for s in record.saves] == [2.0]


def test_an_image_that_exec_d_the_next_without_saving_is_a_loss(tmp_path: Path) -> None:
    """A Go service re-executing itself: its runtime writes counters at exit, not at exec,
    and the ledger's second `start` of the pid replaced the first, so what the first image
    ran was lost with nothing said (an outside check). A Python image saves at exec."""
    start = {"event": "start", "service": "svc", "pid": 7, "ppid": 1, "time": 1.0,
             "data_file": str(tmp_path / "none"), "core": "go"}  # fmt: skip
    exit_save = {"event": "save", "pid": 7, "time": 3.0, "reason": "exit", "measured": 1}
    go = tmp_path / "go"
    go.mkdir()
    for event in (start, start, exit_save):
        protocol.append_record(go / "svc.7.go.jsonl", event)
    [record] = protocol.read_ledger(go)
    assert record.unsaved_images == 1
    [found] = collect.outcomes(go, None, {})
    assert found.status == "partial" and found.is_loss
    assert found.message.startswith("svc pid 7 re-executed itself once without saving first")
    python = tmp_path / "py"
    python.mkdir()
    exec_save = {"event": "save", "pid": 7, "time": 2.0, "reason": "exec", "measured": 1}
    for event in ({**start, "core": "ctrace"}, exec_save, {**start, "core": "ctrace"}, exit_save):
        protocol.append_record(python / "svc.7.ab.jsonl", event)
    [found] = collect.outcomes(python, None, {})
    assert found.status == "saved", found


def test_function_report_shape() -> None:
    report = {
        "files": {
            "src/a.py": {
                "functions": {
                    "": {
                        "start_line": 1,
                        "summary": {"num_statements": 2, "percent_covered": 100.0},
                    },
                    "C.m": {
                        "start_line": 9,
                        "summary": {"num_statements": 3, "percent_covered": 66.666},
                    },
                    "f": {
                        "start_line": 3,
                        "summary": {"num_statements": 1, "percent_covered": 0.0},
                    },
                }
            }
        },
        "totals": {"percent_covered": 50.0},
    }
    lines = reports.function_report(report)
    assert [line.split() for line in lines] == [
        ["src/a.py:3:", "f", "0.0%"],
        ["src/a.py:9:", "C.m", "66.7%"],
        ["total:", "(statements)", "50.0%"],
    ]


def test_redaction() -> None:
    assert diagnostics.redact("API_TOKEN", "abc") == "***"
    assert diagnostics.redact("DSN", "postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert diagnostics.redact("PATH", "/usr/bin") == "/usr/bin"
    # the forms a secret takes in values whose names say nothing (each was shown in clear)
    forms = {
        "redis://:RedisPass123@redis:6379/0": "redis://:***@redis:6379/0",  # no user name
        "postgresql://sg:abc/def+ghi@db/sg": "postgresql://sg:***@db/sg",  # '/' in it
        "amqp://u:p@ss@mq/": "amqp://u:***@mq/",  # '@' in it
        "postgresql://db/sg?sslmode=require&password=Q": "postgresql://db/sg?sslmode=require&password=***",
        "host=db password=KeywordPass user=x": "host=db password=*** user=x",
        "host=db password = Spaced user=x": "host=db password = *** user=x",
        "PGPASSWORD=Shell psql -h db": "PGPASSWORD=*** psql -h db",
        "--passphrase=Phrase --access-key=Key": "--passphrase=*** --access-key=***",
        "http://ds:8090/api": "http://ds:8090/api",
        # a URL's user with no password (a Sentry DSN's key), a webhook's path
        "https://Key@o1.ingest.sentry.io/42": "https://***@o1.ingest.sentry.io/42",
        "https://hooks.slack.com/services/T0/B0/X": "https://hooks.slack.com/***",
        "https://discord.com/api/webhooks/1/tok": "https://discord.com/api/webhooks/***",
        "https://acme.webhook.office.com/webhookb2/a/b": "https://acme.webhook.office.com/***",
    }
    assert {v: diagnostics.redact("SIGNALGATE_STORE__DSN", v) for v in forms} == forms
    assert diagnostics.redact("DB_PW", "x") == "***"
    assert diagnostics.redact("GITHUB_PAT", "ghp_x") == diagnostics.redact("PAT", "x") == "***"
    assert diagnostics.redact("SLACK_WEBHOOK", "https://example.com/n/x") == "***"
    assert diagnostics.redact("XPATH_ROOT", "/a") == "/a"  # PAT inside a word is no token
    assert diagnostics.redact("PWD", "/srv/app") == "/srv/app"  # the working directory


def test_the_command_line_is_redacted_too() -> None:
    # a flag taken for a secret's value still masks the value after it
    shown = diagnostics.redact_command(["app", "--password", "--pass", "X"])
    assert shown == ["app", "--password", "***", "***"]
    command = ["app", "--dsn", "postgresql://sg:CmdPass@db/sg", "--password", "hunter2"]
    command += ["--token=abc", "--port", "8080"]
    assert diagnostics.redact_command(command) == [
        "app", "--dsn", "postgresql://sg:***@db/sg", "--password", "***",
        "--token=***", "--port", "8080",
    ]  # fmt: skip


_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"


def test_secrets_in_more_forms_are_hidden() -> None:
    # (name, value, the secret that must not show): each was shown in clear
    cases = [
        ("MYSQL_PWD", "hunter9", "hunter9"),
        ("DB_CREDS", "app:hunter8", "hunter8"),
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0==;EndpointSuffix=x",
            "c2VjcmV0",
        ),
        ("BLOB_URL", "https://a.blob.core.windows.net/c?sv=2022&ss=b&sig=SasSig%3D", "SasSig"),
        (
            "ALERT_URL",
            "https://prod-1.westus.logic.azure.com:443/workflows/a/triggers/manual/paths/"
            "invoke?api-version=2016-06-01&sv=1.0&sig=TeamsWorkflowSig",
            "TeamsWorkflowSig",
        ),
        ("MAPS", "https://maps.googleapis.com/json?key=AIzaSyDdI0hCZtE6vySjMm", "AIzaSyDd"),
        ("SA_JSON", '{"private_key":"-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n"}', "MIIEvQ"),
        (
            "TLS_PEM",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIB\n-----END RSA PRIVATE KEY-----",
            "MIIEowIB",
        ),
        ("CURL_OPTS", f"-H 'Authorization: Bearer {_JWT}'", _JWT[:20]),
        ("HTTP_HEADERS", "Authorization=Bearer abc123secret", "abc123secret"),
        ("ID", _JWT, _JWT[:20]),
        ("TELEGRAM", "https://api.telegram.org/bot123456:ABC-tgSecret/sendMessage", "tgSecret"),
        ("CHAT", "https://x.example/hooks/ab12cd34ef56gh78ij90", "ab12cd34ef56gh78ij90"),
    ]
    shown = {name: diagnostics.redact(name, value) for name, value, _ in cases}
    assert [name for name, _, secret in cases if secret in shown[name]] == []
    assert shown["TLS_PEM"] == ("-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----")
    assert shown["ALERT_URL"].endswith("&sv=1.0&sig=***")
    assert shown["TELEGRAM"] == "https://api.telegram.org/bot123456:***/sendMessage"


def test_what_is_no_secret_is_shown() -> None:
    # each of these was hidden whole or in part
    keep = {
        "PWD": "/srv/app",  # the working directory, not a password
        "OLDPWD": "/srv",
        "UPSTREAM": "http://127.0.0.1:8080/users/@me/profile",  # ':8080/' is a port
        "NPM_REGISTRY": "https://registry.npmjs.org:443/@types%2fnode",
        "GATEWAY_URL": "http://127.0.0.1:8080/api/v1/webhooks/alertmanager/prod",
        "PRECOMMIT": "https://github.com/pre-commit/pre-commit-hooks/archive/v4.tar.gz",
        "KEYCLOAK_URL": "http://keycloak:8080/realms/x",
        "AUTH_SERVER_URL": "http://auth:8080",
        "OAUTH_REDIRECT": "http://127.0.0.1:3000/callback",
        "PUBLIC_KEY_URL": "https://example.com/.well-known/jwks.json",
        "KEY_FILE": "/etc/tls/server.key",
        "PASSWORD_FILE": "/run/secrets/db_password",
        "SSH_AUTH_SOCK": "/tmp/ssh-abc/agent.123",
        "GIT_AUTHOR_NAME": "Jane Doe",
        "GIT_AUTHOR_EMAIL": "jane@example.com",
        "TOKENIZERS_PARALLELISM": "false",
        "KEYSPACE": "app_ks",
        "PASSENGER_APP_ENV": "production",
        "BYPASS_CACHE": "1",
        "GIT_REPO": "git+ssh://git@github.com/org/repo.git",  # ssh's conventional user
    }
    assert {name: diagnostics.redact(name, value) for name, value in keep.items()} == keep
    # the password of a URL whose path holds '@' is still hidden, and only it
    assert (
        diagnostics.redact("U", "http://u:p@host:8080/users/@me")
        == "http://u:***@host:8080/users/@me"
    )
    # a webhook name is hidden whatever its last word
    assert diagnostics.redact("SLACK_WEBHOOK_URL", "https://example.com/n/x") == "***"


def test_a_flag_with_equals_is_judged_like_the_flag_with_a_value() -> None:
    command = ["app", "--db-pass=hunter2", "--auth=admin:hunter3", "--pw=hunter4"]
    command += ["--db-pass", "hunter5", "--secret-file=/run/s", "--keep-alive=5"]
    assert diagnostics.redact_command(command) == [
        "app", "--db-pass=***", "--auth=***", "--pw=***", "--db-pass", "***",
        "--secret-file=/run/s", "--keep-alive=5",
    ]  # fmt: skip


def test_progress_lines_and_spinner() -> None:
    plain = io.StringIO()
    progress = Progress(plain, tty=False)
    progress.phase("test")
    progress.spin("running")
    progress.emit("line from tests\n")
    assert progress.done() >= 0
    assert plain.getvalue().splitlines()[0] == "e2ecov ▸ test"
    assert plain.getvalue().splitlines()[1] == "line from tests"
    assert plain.getvalue().splitlines()[2].startswith("e2ecov ✓ test done in ")
    assert "\r" not in plain.getvalue()
    term = io.StringIO()
    live = Progress(term, tty=True)
    live.phase("health")
    live.spin("waiting for api")
    live.emit("out")
    assert "waiting for api" in term.getvalue() and "\r\x1b[2Kout\n" in term.getvalue()


def test_plugin_and_agent_are_inert_outside_e2ecov(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in protocol.ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    assert pytest_plugin._control_dir() is None
    assert Settings.from_environ() is None


def test_exit_code_precedence() -> None:
    from e2ecov.errors import ExitCode

    tests, stack, lost = ExitCode.TESTS_FAILED, ExitCode.STACK_DOWN, ExitCode.COVERAGE
    assert ExitCode.first([lost, tests]) is tests  # failing tests plus too little coverage: 1
    assert ExitCode.first([lost, tests, stack]) is stack
    assert ExitCode.first([stack, ExitCode.INVALID]) is ExitCode.INVALID
    assert ExitCode.first([ExitCode.INVALID, ExitCode.for_signal(15)]) == 143
    assert ExitCode.for_signal(2) == 130 and ExitCode.for_signal(1) == 129
    assert ExitCode.first([]) is ExitCode.OK


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    """The kernel reuses a closed socket's port for a later bind often enough that two
    services given `free_port(), free_port()` once collided in CI (about 3 in 100 picks
    repeat within 500 calls); every port handed out must be one this process was not."""
    ports = [recipes.free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_source_changed_since_the_run_is_named_by_a_later_report(tmp_path: Path) -> None:
    """Coverage data holds line numbers: a report against edited text moved the run's lines
    onto other lines and said nothing (only a deleted file was named)."""
    import coverage

    from e2ecov.reports import _changed_since_the_run

    source = tmp_path / "logic.py"
    source.write_text("def f():\n    return 1\n")
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    data.add_lines({str(source): [1, 2]})
    data.write()
    cov = coverage.Coverage(data_file=str(tmp_path / ".coverage"))
    cov.load()
    record = tmp_path / "sources.json"
    assert _changed_since_the_run(cov, record) == []  # the run's report records the digests
    assert _changed_since_the_run(cov, record) == []  # a report of the same text: quiet
    source.write_text("# a new first line\ndef f():\n    return 1\n")
    [warning] = _changed_since_the_run(cov, record)
    assert str(source) in warning and "changed since the run" in warning


def test_a_go_process_that_wrote_its_exit_counters_saved(tmp_path: Path) -> None:
    """The Go agent writes no exit record: a Go child that exited normally (the runtime's
    counters on disk, its hits in the report) was reported lost, failing the run."""
    covdir = tmp_path / "go"
    covdir.mkdir()
    live = covdir / "covcounters.ab12.4242.100"
    live.write_bytes(b"")
    (covdir / "covcounters.ab12.4242.100.e2ecov-live").write_bytes(b"")
    record = ProcessRecord("goapp", 4242, 1, 100.0, str(covdir), "go", "go1.26", [])
    record.saves.append({"event": "save", "reason": "save", "time": 101.0, "measured": 1})
    partial = collect.judge(record, None, {})
    assert partial.status == "partial"  # only a live save: what ran after it is lost
    (covdir / "covcounters.ab12.4242.200").write_bytes(b"")  # then the exit's own counters
    assert collect.judge(record, None, {}).status == "saved"
    silent = ProcessRecord("goapp", 4343, 1, 100.0, str(covdir), "go", "go1.26", [])
    assert collect.judge(silent, None, {}).status == "lost"


def test_a_total_just_below_fail_under_reads_below_it() -> None:
    """76.087 against 76.1 read "76.1% is below fail_under 76.1%"."""
    config = reports.ReportConfig(root=Path("/"), source=[], paths={}, contexts=False)
    config = dataclasses.replace(config, fail_under=76.1, service_fail_under={"go": 50.0})
    [total, service] = reports._below(
        config, {"go": reports.Totals(100, 51, 49.0)}, reports.Totals(46, 11, 76.087)
    )
    assert total == "total coverage 76.09% is below fail_under 76.1%"
    assert service == "service go coverage 49.0% is below its fail_under 50%"


def test_a_fail_under_with_nothing_measured_is_not_met() -> None:
    """A service whose `source` it never imported has no statements: it read 100% and
    passed its fail_under of 90 (an outside check); coverage.py's --fail-under says "No data
    to report" and fails."""
    config = reports.ReportConfig(root=Path("/"), source=[], paths={}, contexts=False)
    config = dataclasses.replace(config, fail_under=80.0, service_fail_under={"b": 90.0})
    empty = reports.Totals(0, 0, 100.0)
    assert reports._below(config, {"b": empty}, empty) == [
        "nothing under source was measured to hold to fail_under",
        "service b has nothing under source to measure its fail_under",
    ]
    unbound = dataclasses.replace(config, fail_under=0.0, service_fail_under={})
    assert reports._below(unbound, {"b": empty}, empty) == []


def test_go_lines_for_lcov_are_the_blocks_lines_that_hold_code(tmp_path: Path) -> None:
    """A profile's block spans whole line ranges: counted as lines, its comments, blank
    lines and closing braces made a real Go service's LCOV 2.4 times its statements."""
    from e2ecov.gocover import parse_profile

    (tmp_path / "main.go").write_text(
        "package main\n"  # 1
        "\n"  # 2
        "func f(x int) int {\n"  # 3
        "\t// why\n"  # 4
        "\tif x > 0 {\n"  # 5
        "\t\treturn 1\n"  # 6
        "\t}\n"  # 7
        "\t/* a longer\n"  # 8
        "\t   comment */\n"  # 9
        "\n"  # 10
        "\treturn g(\n"  # 11
        "\t\tx,\n"  # 12
        "\t)\n"  # 13
        "}\n"  # 14
    )
    profile = "mode: set\nexample.com/m/main.go:3.20,5.12 1 1\n"
    profile += "example.com/m/main.go:5.12,7.3 1 0\nexample.com/m/main.go:11.2,13.3 1 1\n"
    [(name, go_file)] = parse_profile(profile, {"example.com/m": tmp_path}, tmp_path).items()
    assert name == "main.go" and go_file.statements == 3 and go_file.covered == 2
    assert go_file.lines == {3: 1, 5: 1, 6: 0, 11: 1, 12: 1}
    # a module not on disk keeps the blocks' whole ranges
    [(_, remote)] = parse_profile(
        profile.replace("example.com/m", "example.org/x"), {}, tmp_path
    ).items()
    assert sorted(remote.lines) == [3, 4, 5, 6, 7, 11, 12, 13]


def test_a_coverage_py_too_old_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pip kept a coverage.py 7.10 the package once accepted; the stack ran, then the
    report crashed (KeyError 'start_line', exit 1, no reports). Now: exit 2 at once."""
    import coverage

    from e2ecov import cli

    monkeypatch.setattr(coverage, "__version__", "7.10.0")
    with pytest.raises(UsageError, match=r"coverage\.py 7\.10\.0 is too old"):
        doctor.require_coverage()
    assert cli.main(["run", "-c", "/nonexistent/e2ecov.toml"]) == 2


def test_the_ledgers_command_lines_are_redacted_once_the_stack_stopped(tmp_path: Path) -> None:
    """The agents write each process's raw argv: a `--db-pass=…` sat in processes/*.jsonl,
    the artifacts a CI job uploads, while status.json showed it redacted."""
    ledger = tmp_path / "app.1.jsonl"
    start = {"event": "start", "pid": 1, "argv": ["svc", "--db-pass=hunter2", "--port", "80"]}
    ledger.write_text(json.dumps(start) + "\n" + '{"event": "save", "pid": 1}\n{"torn')
    diagnostics.redact_ledgers(tmp_path)
    lines = ledger.read_text().splitlines()
    assert json.loads(lines[0])["argv"] == ["svc", "--db-pass=***", "--port", "80"]
    assert lines[1:] == ['{"event": "save", "pid": 1}', '{"torn']
    assert "hunter2" not in ledger.read_text()


def test_a_go_file_belongs_to_the_innermost_module_holding_it(tmp_path: Path) -> None:
    """The reports name Go files with every Go service's modules together: a module nested in
    another's import path (`example.com/a/tools`, checked out apart) was read as a package of
    the outer one, at a path that does not exist there."""
    from e2ecov.gocover import parse_profile

    outer, inner = tmp_path / "a", tmp_path / "tools"
    outer.mkdir()
    inner.mkdir()
    (inner / "x.go").write_text("package tools\n\nfunc X() int {\n\treturn 1\n}\n")
    profile = "mode: set\nexample.com/a/tools/x.go:3.16,5.2 1 1\n"
    modules = {"example.com/a": outer, "example.com/a/tools": inner}
    [(name, go_file)] = parse_profile(profile, modules, tmp_path).items()
    assert name == "tools/x.go" and go_file.lines == {3: 1, 4: 1}


def test_a_service_measured_with_an_old_coverage_is_warned_about(tmp_path: Path) -> None:
    """`doctor` said FAIL for a service's coverage.py older than e2ecov needs, and `run`
    measured it without a word (an outside check): each service and version is named once,
    from what its processes told the ledger."""
    import io
    import types

    from e2ecov import protocol
    from e2ecov.progress import Progress
    from e2ecov.runner import Run

    ledger = tmp_path / "processes"
    ledger.mkdir()
    for pid, version in ((11, "7.13.0"), (12, "7.13.0"), (13, "7.14.1"), (14, "")):
        protocol.append_record(
            ledger / f"{pid}.jsonl",
            {
                "event": "start", "service": f"svc{pid // 13}", "pid": pid, "ppid": 1,
                "time": 0.0, "data_file": "", "coverage": version,
            },
        )  # fmt: skip
    out = io.StringIO()
    run = types.SimpleNamespace(out=tmp_path, progress=Progress(out, tty=False))
    Run._warn_old_coverage(run)  # type: ignore[arg-type]
    assert out.getvalue().count("warning:") == 1
    assert "service svc0 measured with coverage 7.13.0; e2ecov needs 7.14" in out.getvalue()


def test_no_combined_go_page_across_modules_says_why(tmp_path: Path) -> None:
    """`go tool cover -html` reads one module's sources: services of two modules get their
    own pages only, and the report says so instead of a message about a second program."""
    modules = {"example.com/a": tmp_path / "a", "example.com/b": tmp_path / "b"}
    services = [
        gocover.GoService(name, {}, [], None, [], f"mode: set\n{path}:3.1,4.2 1 1\n")
        for name, path in (("a", "example.com/a/main.go"), ("b", "example.com/b/main.go"))
    ]
    union = gocover.GoUnion({}, [], [])
    made, why = gocover.combined_html(services, union, modules, tmp_path / "all.html", tmp_path)
    assert not made and why is not None and "2 modules (example.com/a, example.com/b)" in why
    assert not (tmp_path / "all.html").exists()


def test_a_go_file_built_from_different_sources_is_named_and_gets_no_combined_page(
    tmp_path: Path,
) -> None:
    """Two services running two versions of one file (a replica not yet rolled out): the
    combined figures add both versions' blocks, which the report must say; and one page
    cannot show two versions of a file's lines."""
    modules = {"example.com/a": tmp_path / "a"}
    old, new = "example.com/a/main.go:3.1,4.2 1 1", "example.com/a/main.go:3.1,6.2 2 1"
    services = [
        gocover.GoService(name, {"a/main.go": gocover.GoFile("a/main.go", "a")}, [], None, [],
                          f"mode: set\n{block}\n")
        for name, block in (("api-old", old), ("api-new", new), ("worker", old))
    ]  # fmt: skip
    union = gocover.union(services, modules, tmp_path)
    assert [w for w in union.warnings if "different sources" in w] == [
        "Go file a/main.go was built from different sources in services api-old, api-new: "
        "its combined figures count the blocks of every version"
    ]
    made, why = gocover.combined_html(services, union, modules, tmp_path / "all.html", tmp_path)
    assert not made and why == "a Go file was built from different sources in the services"


def test_report_of_an_artifacts_directory_that_does_not_exist_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped `--artifacts` was exit 4 "no coverage data in DIR/data" with causes about
    instrumentation, and left the mistyped directory created behind it. Now: exit 2 naming
    the directory, and nothing made."""
    from e2ecov import cli

    missing = tmp_path / "buld" / "e2e"
    assert cli.main(["report", "--artifacts", str(missing)]) == 2
    assert f"e2ecov: error: {missing}: no such directory" in capsys.readouterr().err
    assert not (tmp_path / "buld").exists()


def test_python_m_e2ecov_is_the_command() -> None:
    """`python -m e2ecov` ran nothing ("'e2ecov' is a package and cannot be directly
    executed"): a venv whose scripts are not on PATH had no way in but `e2ecov.cli`."""
    done = subprocess.run(
        [sys.executable, "-m", "e2ecov", "run", "-c", "/nonexistent/stack.toml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "/nonexistent/stack.toml" in done.stderr


def test_an_exec_keeps_the_start_up_hook_first_on_pythonpath() -> None:
    """A launcher's own `sitecustomize` put before e2ecov's goes after it; a PYTHONPATH
    without the hook (a program that replaced it) is left as it is."""
    assert hook_first("/otel:/hook:/app", "/hook") == "/hook:/otel:/app"
    assert hook_first("/hook:/app", "/hook") == "/hook:/app"
    assert hook_first("/otel:/app", "/hook") == "/otel:/app"
    assert hook_first("/otel:/hook", "") == "/otel:/hook"


def test_the_summary_says_once_that_a_service_never_started(tmp_path: Path) -> None:
    """A service that never started read "never started  not started" in the summary."""
    from e2ecov.services import ServiceRun
    from e2ecov.stackfile import ServiceSpec

    spec = ServiceSpec(
        name="api", command=["true"], recipe=None, env={}, depends_on=[], health=None,
        coverage=False, cwd=tmp_path, fail_under=None, grace=1.0, source=[],
        port_names=frozenset(),
    )  # fmt: skip
    never = ServiceRun(
        spec=spec, ports={}, command=["true"], env_added={}, env={}, log_dir=tmp_path
    )
    summary = diagnostics.write(tmp_path, {"api": never}, "api did not start", []).read_text()
    lines = summary.splitlines()
    line = lines[lines.index("services:") + 1]
    assert line.split() == ["api", "not", "started"], line


def test_doctor_checks_the_kube_apiserver_recipes_own_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctor` said "recipe kube-apiserver: binaries found" on a machine with no etcd or
    kube-apiserver (it looked for Redis's): it finds them as `run` does, from
    `$E2ECOV_KUBE_BIN` or PATH, and says what is missing."""
    from e2ecov import stackfile

    (tmp_path / "e2ecov.toml").write_text(
        '[run]\ntests = ["true"]\nsource = ["."]\n\n[services.kube]\nrecipe = "kube-apiserver"\n'
    )
    stack = stackfile.load(tmp_path / "e2ecov.toml")
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("E2ECOV_KUBE_BIN", str(empty))
    [kube] = [check for check in doctor.checks(stack) if check.name == "service kube"]
    assert not kube.ok and "lacks etcd or kube-apiserver" in kube.detail
    for name in ("etcd", "kube-apiserver"):
        (empty / name).write_text("#!/bin/sh\n")
    [kube] = [check for check in doctor.checks(stack) if check.name == "service kube"]
    assert kube.ok and kube.detail == "recipe kube-apiserver: binaries found"
