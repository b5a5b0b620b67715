"""HTTPS on a service's API listener: the certificate and key files, checked at start and
read again while it runs.

A certificate is renewed while the service runs: cert-manager, or whoever updates the
Secret mounted at `server.tlsCertFile`/`tlsKeyFile`, replaces both files weeks before the
old one expires. A restart to take it would refuse signals meanwhile (Alertmanager retries,
a Kubernetes Event is lost), so the pair is looked at every `RELOAD_CHECK` seconds and at
once on SIGHUP, and a new pair that loads is served to the connections made from then on;
connections already open keep the certificate they shook hands with. A pair that does not
load (a key of another certificate: the two files are seldom written in one step outside a
Secret) is not taken: the pair loaded before stays, and the error is logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from signalgate.common.config import ConfigError
from signalgate.common.file_watch import RELOAD_CHECK, FileWatch, look_aside, not_a_regular_file
from signalgate.common.tasks import wait_event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tls:
    """The API listener's certificate chain and key (PEM files, e.g. a mounted Secret)."""

    cert_file: Path
    key_file: Path

    @classmethod
    def from_settings(cls, cert_file: Path | None, key_file: Path | None) -> Tls | None:
        """None for plain HTTP; a `ConfigError` naming the key for a half or missing pair."""
        if cert_file is None and key_file is None:
            return None
        if cert_file is None or key_file is None:
            missing = "server.tlsCertFile" if cert_file is None else "server.tlsKeyFile"
            raise ConfigError(
                f"config key '{missing}': missing; TLS needs both server.tlsCertFile and "
                "server.tlsKeyFile (or neither, for plain HTTP)"
            )
        for key, path in (("server.tlsCertFile", cert_file), ("server.tlsKeyFile", key_file)):
            if not path.is_file():
                raise ConfigError(f"config key '{key}': '{path}' is not a readable file")
        try:  # loaded now, as the listener will: a key of another certificate, or not PEM
            load_pair(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"config keys 'server.tlsCertFile' / 'server.tlsKeyFile': '{cert_file}' and "
                f"'{key_file}' are not a certificate chain and its private key ({exc})"
            ) from None
        return cls(cert_file, key_file)


def load_pair(cert_file: Path, key_file: Path) -> None:
    """Load the pair into a context of its own, as the listener will; `ssl.SSLError` or
    `OSError` when it does not load."""
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)


class ServingCertificate:
    """Keeps a listener's TLS context serving the pair its files hold now (see the module's
    docstring). The context is the listener's own (uvicorn's), changed in place: OpenSSL
    gives each new connection the context's pair at its handshake."""

    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self._watch = FileWatch(tls.cert_file, tls.key_file)
        self._wake = asyncio.Event()
        self._forced = False

    def check_soon(self) -> None:
        """A SIGHUP: look now, and take a change without waiting for it to settle."""
        self._forced = True
        self._wake.set()

    async def keep(self, context: ssl.SSLContext) -> None:
        """Look every `RELOAD_CHECK` seconds (or when asked) until cancelled."""
        while True:
            await wait_event(self._wake, RELOAD_CHECK)
            self._wake.clear()
            forced, self._forced = self._forced, False
            if await look_aside(self._loads_anew, forced):
                # on the loop, between handshakes: the files are read once more (a few KB)
                try:
                    context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
                except (ssl.SSLError, OSError) as exc:  # changed again since the check
                    _not_taken(self.tls, exc)
                    continue
                log.info(
                    "TLS certificate reloaded",
                    extra={"cert_file": str(self.tls.cert_file)},
                )

    def _loads_anew(self, forced: bool) -> bool:
        """Whether the files changed and the new pair loads (off the loop)."""
        if not self._watch.changed(forced):
            return False
        if odd := not_a_regular_file(self.tls.cert_file, self.tls.key_file):
            _not_taken(self.tls, OSError(f"'{odd}' is not a regular file"))
            return False
        try:
            load_pair(self.tls.cert_file, self.tls.key_file)
        except (ssl.SSLError, OSError) as exc:
            _not_taken(self.tls, exc)
            return False
        return True


def _not_taken(tls: Tls, exc: Exception) -> None:
    log.error(
        "TLS certificate not reloaded: the pair loaded before is still served",
        extra={"cert_file": str(tls.cert_file), "key_file": str(tls.key_file), "error": str(exc)},
    )
