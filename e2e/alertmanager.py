"""Start Alertmanager for the end-to-end stack, configured for this run.

The binary is the one built with `go build -cover` by e2e/build-alertmanager.sh, named by
SIGNALGATE_E2E_ALERTMANAGER (`make e2e-coverage` sets it), so e2ecov measures it as a Go
service; without it, Debian's prometheus-alertmanager runs and e2ecov reports that it wrote no
coverage.

Alertmanager reads no environment variables in its configuration, and the Gateway's port is
chosen per run, so this writes `alertmanager.yml` into the run's state directory and then
*replaces itself* with Alertmanager (`os.execv`): e2ecov supervises, health-checks and stops
the Alertmanager process itself, under this script's pid.

The configuration is the one in the README's "Wiring Alertmanager", with intervals short
enough for a test: one group per alert (`group_by: ['...']`), `group_wait` 1 s, and a repeat
every few seconds so a still-firing alert is re-notified (which the Gateway must deduplicate).

    python3 e2e/alertmanager.py --port PORT --gateway URL --token-file FILE --state DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

BINARY = "prometheus-alertmanager"
INSTALL_HINT = "install the Debian package 'prometheus-alertmanager'"
# the Alertmanager built with -cover (e2e/build-alertmanager.sh; `make e2e-coverage` sets it)
BINARY_ENV = "SIGNALGATE_E2E_ALERTMANAGER"


def config(gateway_url: str, token_file: Path) -> str:
    """alertmanager.yml (JSON is valid YAML, which keeps this free of a YAML dependency)."""
    document = {
        "route": {
            "receiver": "signalgate",
            "group_by": ["..."],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "2s",
        },
        "receivers": [
            {
                "name": "signalgate",
                "webhook_configs": [
                    {
                        "url": gateway_url.rstrip("/") + "/api/v1/signals/prometheus",
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(token_file),
                            }
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", required=True, help="the web (API) port")
    parser.add_argument("--gateway", required=True, help="the Gateway's API URL")
    parser.add_argument("--token-file", required=True, type=Path, help="bearer token file")
    parser.add_argument("--state", required=True, type=Path, help="config and storage directory")
    args = parser.parse_args(argv)

    binary = (
        os.environ.get(BINARY_ENV)
        or shutil.which(BINARY)
        or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    )
    if binary is None:
        print(f"e2e/alertmanager.py: {BINARY} not found on PATH: {INSTALL_HINT}", file=sys.stderr)
        return 127
    token_file = args.token_file.resolve()
    if not token_file.is_file():
        print(f"e2e/alertmanager.py: token file {token_file} does not exist", file=sys.stderr)
        return 2
    args.state.mkdir(parents=True, exist_ok=True)
    config_file = args.state / "alertmanager.yml"
    config_file.write_text(config(args.gateway, token_file))
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={args.state / 'data'}",
        f"--web.listen-address=127.0.0.1:{args.port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    sys.stdout.flush()
    os.execv(binary, command)  # noqa: S606 - replace this process: e2ecov supervises Alertmanager


if __name__ == "__main__":
    sys.exit(main())
