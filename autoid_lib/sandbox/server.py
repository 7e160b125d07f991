"""The ``Sandbox`` handle: a seeded REDCap-compatible server on a loopback port, in a thread.

Usage (tests, demo, benchmarks)::

    with Sandbox(seed="demo") as sb:                # 127.0.0.1, a free port, in-memory DB
        Project(sb.url, sb.tokens["incoming"], timeout=10).export_records()
        sb.request_counts()                         # Counter({("incoming", "record", "export"): 1})
        sb.inject_fault("http500", database="autoid", action="import")
        sb.rows("incoming")                         # what a full JSON export returns
        sb.write_kit_files(tmp_path)                # tokens/*.token, sandbox.env, autoid.toml

The handle is thin on purpose: the REDCap protocol lives in ``api.RedcapApp``; ``rows`` and
``add_rows`` call the same export/import code the HTTP API uses, without counting requests.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo

from .api import CREATOR_RIGHTS, RIGHTS, RedcapApp
from .faults import Fault
from .protocol import decode_rows
from .schema import DATABASES
from .seed import DEFAULT_STUDIES, SeedSummary, build_demo
from .store import Store

SEEDS = ("demo", "empty")
__all__ = ["CREATOR_RIGHTS", "RIGHTS", "SEEDS", "Sandbox", "new_token"]


def new_token() -> str:
    """A fresh API token shaped like REDCap's: 32 upper-case hex characters."""
    return secrets.token_hex(16).upper()


class _Clock:
    """REDCap's clock: naive local time in the server's PHP ``date.timezone`` (the machine's
    zone when none is given), which record times and the ``dateRange`` filter use; optionally
    frozen or shifted so tests can move through days."""

    def __init__(self, timezone: str = "") -> None:
        self._zone = ZoneInfo(timezone) if timezone else None
        self._frozen: datetime | None = None
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            local = datetime.now(self._zone).replace(tzinfo=None, microsecond=0)
            return local + self._offset

    def set(self, when: datetime | None) -> None:
        with self._lock:
            self._frozen, self._offset = when, timedelta(0)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += delta
            else:
                self._offset += delta


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # the stdlib's signature
        pass


class Sandbox:
    """A REDCap API sandbox with the ``projects``, ``incoming`` and ``autoid`` databases.

    ``seed`` is ``"demo"`` or ``"empty"``; ``db_path`` a SQLite file (kept between runs: an
    existing file keeps its data and tokens and is not re-seeded) or ``None`` for memory;
    ``port=0`` picks a free port; ``tokens`` fixes the tokens (default: fresh random ones);
    ``now`` freezes the server clock (default: real local time); ``n_studies`` sizes the demo.
    ``timezone`` is REDCap's PHP ``date.timezone`` (an IANA name; default: the machine's zone):
    record times and the ``dateRangeBegin``/``End`` filter are on that clock, as on a real
    REDCap. ``import_row_cost_s`` makes every imported row take that long (REDCap 15.7.6
    measured about 0.008 s a row on 2 vCPU), so tests and benchmarks see slow writes.
    ``status`` maps a database to ``"development"`` or ``"production"`` (the default for all):
    in development REDCap refuses an import that would take it past 50 records, and project
    info's ``in_production`` is 0. ``rights`` maps a database to its token's rights, a subset
    of ``RIGHTS`` (``export``, ``import``, ``delete``, ``rename``; default all four);
    ``CREATOR_RIGHTS`` is what REDCap gives a project's creator.
    """

    def __init__(
        self,
        seed: str = "empty",
        db_path: str | os.PathLike[str] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        tokens: Mapping[str, str] | None = None,
        now: datetime | None = None,
        n_studies: int = DEFAULT_STUDIES,
        timezone: str = "",
        import_row_cost_s: float = 0.0,
        status: Mapping[str, str] | None = None,
        rights: Mapping[str, Iterable[str]] | None = None,
    ):
        if seed not in SEEDS:
            raise ValueError(f"unknown seed {seed!r}; choose one of {SEEDS}")
        self.host = host
        self.port = port
        self._clock = _Clock(timezone)
        if now is not None:
            self._clock.set(now)
        self.store = Store(db_path)
        self.seed_summary: SeedSummary | None = None
        self.tokens = self._tokens(tokens)
        if self.store.get_meta("seed") is None:
            if seed == "demo":
                self.seed_summary = build_demo(self.store, self._clock(), n_studies=n_studies)
            self.store.set_meta("seed", seed)
            self.store.set_meta("created", self._clock().strftime("%Y-%m-%d %H:%M:%S"))
        self.app = RedcapApp(
            self.store,
            self.tokens,
            self._clock,
            created=self.store.get_meta("created") or "",
            rights=rights,
            status=status,
        )
        self.app.import_row_cost_s = import_row_cost_s
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def _tokens(self, given: Mapping[str, str] | None) -> dict[str, str]:
        stored = self.store.get_meta("tokens")
        tokens = dict(given) if given else json.loads(stored) if stored else {}
        for db in DATABASES:
            tokens.setdefault(db, new_token())
        self.store.set_meta("tokens", json.dumps(tokens))
        return {db: tokens[db] for db in DATABASES}

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Serve on ``host:port`` in a daemon thread; returns self once it accepts requests."""
        if self._server is not None:
            return self
        self._server = make_server(
            self.host, self.port, self.app, _ThreadingServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"redcap-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake requests sleeping in a timeout fault, close the database."""
        self.app.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.store.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    # -- time ---------------------------------------------------------------------------
    def now(self) -> datetime:
        """The server's current local time (what record timestamps are written with)."""
        return self._clock()

    def set_now(self, when: datetime | None) -> None:
        """Freeze the server clock at ``when``; ``None`` returns to real time."""
        self._clock.set(when)

    def advance(self, delta: timedelta) -> None:
        """Move the server clock forward (or back) by ``delta``."""
        self._clock.advance(delta)

    # -- counters and faults ------------------------------------------------------------
    def request_counts(self) -> Counter[tuple[str, str, str]]:
        """Requests so far by (database, content, action); a bad token counts as ``unknown``."""
        return self.app.request_counts()

    def request_times(self) -> list[float]:
        """``time.monotonic()`` of each request since the last reset, as it arrived."""
        return self.app.request_times()

    def answer_bytes(self) -> Counter[tuple[str, str, str]]:
        """Bytes REDCap sent since the last reset, by (database, content, action)."""
        return self.app.answer_bytes()

    def reset_counts(self) -> None:
        self.app.reset_counts()

    def total_requests(self) -> int:
        return sum(self.app.request_counts().values())

    def inject_fault(
        self,
        kind: str,
        database: str | None = None,
        content: str | None = None,
        action: str | None = None,
        nth: int | None = None,
        times: int | None = 1,
        delay_s: float = 5.0,
        above_bytes: int | None = None,
    ) -> Fault:
        """Script a failure (see ``faults``): http500, timeout, truncated, oom, lost_answer or
        dropped_rows; ``above_bytes``: only for answers larger than that."""
        if database is not None and database not in DATABASES:
            raise ValueError(f"unknown database {database!r}; choose one of {DATABASES}")
        return self.app.faults.add(
            Fault(
                kind,
                database,
                content,
                action,
                nth=nth,
                times=times,
                delay_s=delay_s,
                above_bytes=above_bytes,
            )
        )

    def clear_faults(self) -> None:
        self.app.faults.clear()

    def add_token(
        self,
        database: str,
        *,
        delete: bool = True,
        import_: bool = True,
        export: bool = True,
        rename: bool = True,
        rights: Iterable[str] | None = None,
    ) -> str:
        """A second API token on ``database`` (another REDCap user), with the rights switched
        off by the flags, or exactly ``rights`` (e.g. ``CREATOR_RIGHTS``: no delete, no
        rename). Not kept in the database file."""
        if database not in DATABASES:
            raise ValueError(f"unknown database {database!r}; choose one of {DATABASES}")
        if rights is None:
            flags = {"delete": delete, "import": import_, "export": export, "rename": rename}
            rights = {right for right, on in flags.items() if on}
        token = new_token()
        self.app.add_token(database, token, rights)
        return token

    def set_status(self, database: str, status: str) -> None:
        """Move ``database`` to ``"development"`` or ``"production"``."""
        if database not in DATABASES or status not in ("development", "production"):
            raise ValueError(f"unknown database or status: {database!r}, {status!r}")
        self.app.status[database] = status

    # -- data ---------------------------------------------------------------------------
    def rows(self, database: str, **export_options) -> list[dict[str, object]]:
        """Flat rows exactly as a JSON ``export_records`` returns them (not counted)."""
        return self.app.export_records(database, **export_options)[1]

    def add_rows(self, database: str, rows: list[dict], *, overwrite: bool = False) -> list[str]:
        """Import ``rows`` like the API does (normal overwrite by default); returns record names."""
        decoded = decode_rows("json", json.dumps(rows))
        return self.app.import_records(database, decoded, overwrite=overwrite).ids

    # -- files for the kit --------------------------------------------------------------
    def write_kit_files(
        self,
        directory: str | os.PathLike,
        reports_dir: str | os.PathLike | None = None,
        env_file: str | os.PathLike | None = None,
    ) -> Path:
        """Write token files, a shell env file and a kit config pointing here; returns the config.

        ``directory/tokens/<db>.token`` (mode 0600, the bare token), ``env_file`` (default
        ``directory/sandbox.env``, ``export`` lines) and ``directory/autoid.toml``.
        """
        root = Path(directory).resolve()
        (root / "tokens").mkdir(parents=True, exist_ok=True)
        reports = Path(reports_dir).resolve() if reports_dir else root / "reports"
        token_files = {}
        for db, token in self.tokens.items():
            token_files[db] = root / "tokens" / f"{db}.token"
            _write_private(token_files[db], token)
        env_lines = [f"export AUTOID_REDCAP_URL={self.url}"] + [
            f"export AUTOID_TOKEN_{db.upper()}={token}" for db, token in self.tokens.items()
        ]
        env_path = Path(env_file) if env_file else root / "sandbox.env"
        _write_private(env_path, "\n".join(env_lines) + "\n")
        q = json.dumps  # a JSON string is a valid TOML basic string
        config = "\n".join(
            [
                "[redcap]",
                f"url = {q(self.url)}",
                "verify = true",
                "timeout_s = 10",
                "[redcap.tokens]",
                f"projects = {q('file:' + str(token_files['projects']))}",
                f"incoming = {q('file:' + str(token_files['incoming']))}",
                f"autoid   = {q('file:' + str(token_files['autoid']))}",
                "[run]",
                "lookback_days = 14",
                'hash = "sha512"',
                f"lock_file = {q(str(root / 'autoid.lock'))}",
                f"reports_dir = {q(str(reports))}",
                "",
            ]
        )
        path = root / "autoid.toml"
        path.write_text(config, encoding="utf-8")
        return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it holds a token); a symlink there is
    replaced, never written through."""
    from autoid_lib.private_files import private_folder, write_private

    private_folder(path.parent)
    write_private(path, text)
