"""The ``[monitoring]`` table and the two moments the commands report: started, and finished.

::

    [monitoring]
    textfile = "/var/lib/node_exporter/textfile_collector/autoid.prom"  # metrics.py
    ping_url = "env:AUTOID_PING_URL"     # or file:PATH, or the URL itself; ping.py
    ping_timeout_s = 5

``autoid run`` and ``autoid audit`` call ``Monitor.started`` before their work and
``Monitor.finished`` after it; both are best effort and never change the exit status. Pings go
out for live runs only (a dry run or an audit by hand must not tell the run's check that the
job is alive); the metrics file is rewritten after every run and audit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from autoid_lib.errors import ConfigError
from autoid_lib.secret import Secret, resolve_secret

log = logging.getLogger("autoid.monitoring")

DEFAULT_PING_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class MonitoringSettings:
    textfile: Path | None = None
    ping_url: Secret | None = field(default=None, repr=False)
    ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S


def monitoring_settings(table: dict, base: Path) -> MonitoringSettings:
    """Parse ``[monitoring]`` (relative paths against the config's folder); ConfigError if bad."""
    textfile = table.get("textfile")
    if textfile is not None:
        if not isinstance(textfile, str) or not textfile.endswith(".prom"):
            raise ConfigError(
                "[monitoring] textfile must be a path ending in .prom "
                "(node_exporter's textfile collector reads only those)"
            )
        textfile = Path(textfile).expanduser()
        textfile = textfile if textfile.is_absolute() else base / textfile
    timeout = table.get("ping_timeout_s", DEFAULT_PING_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise ConfigError("[monitoring] ping_timeout_s must be a number of seconds in (0, 60]")
    return MonitoringSettings(textfile, _ping_url(table.get("ping_url")), float(timeout))


def _ping_url(value) -> Secret | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError("[monitoring] ping_url must be a URL, 'env:NAME' or 'file:PATH'")
    if value.startswith(("env:", "file:")):
        url = resolve_secret(value, "[monitoring] ping_url")
    else:
        url = Secret("[monitoring] ping_url", value)
    if not url.reveal().startswith(("https://", "http://")):
        raise ConfigError(f"[monitoring] ping_url ({url.source}) must be an http(s) URL")
    return url


class Monitor:
    """Pings and metrics for one command; every method swallows and logs its own failures."""

    def __init__(self, settings: MonitoringSettings, *, reports_dir: Path, pings: bool):
        self.settings = settings
        self.reports_dir = reports_dir
        self.ping_url = settings.ping_url if pings else None

    def started(self) -> None:
        if self.ping_url is not None:
            from autoid_lib.ping import START, ping

            ping(self.ping_url, START, timeout_s=self.settings.ping_timeout_s)

    def finished(self, ok: bool, headline: str = "") -> None:
        """The success or fail ping (its body: the headline, data-free) and the metrics file.

        ``ok`` is false only for a failure: a run that yielded to another (exit 3) pings
        success, since the job is alive and its check must not alert; the metrics keep a yield
        apart from a success (``metrics``)."""
        if self.ping_url is not None:
            from autoid_lib.ping import FAIL, SUCCESS, ping

            event = SUCCESS if ok else FAIL
            ping(self.ping_url, event, timeout_s=self.settings.ping_timeout_s, body=headline)
        if self.settings.textfile is not None:
            from autoid_lib.metrics import write_metrics

            try:
                write_metrics(self.settings.textfile, self.reports_dir)
            except OSError as error:
                log.error("metrics not written to %s: %s", self.settings.textfile, error.strerror)
