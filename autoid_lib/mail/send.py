"""E-mailed run and audit reports: when to send, SMTP delivery and ``notify`` (the ``[email]``
settings are checked in ``mail.settings``).

``notify(summary, run_dir, settings)`` is the one call ``autoid run --email`` and
``autoid audit --email`` make after the REDCap work is done: it decides (``should_send``),
composes from ``summary.json`` alone (``autoid_lib.mail.compose``), sends with ``smtplib`` and
returns the ``email`` entry for ``summary.json``. It never raises on SMTP or network trouble:
a mail failure is logged on ``autoid.mail`` and reported, and never fails or repeats the run.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import ssl
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from autoid_lib.mail.carry import with_history_note
from autoid_lib.mail.compose import compose_message
from autoid_lib.mail.policy import (
    Decision,
    FlapRule,
    MailHistory,
    MailRules,
    Undelivered,
    aware,
    decide,
    iso,
    parse_time,
)
from autoid_lib.mail.settings import EmailSettings, email_settings_from_config
from autoid_lib.records.folders import (
    REPORT_FILE,
    history_key,
    parse_run_folder,
    read_summary,
    run_folders,
    run_sequence,
)
from autoid_lib.records.summary import Summary
from autoid_lib.secret import redact
from autoid_lib.vocab import Status

__all__ = [
    "EmailSettings",
    "compose_message",
    "email_settings_from_config",
    "find_previous_summary",
    "notify",
    "send_message",
    "should_send",
    "tls_context",
]

log = logging.getLogger("autoid.mail")

MAX_HISTORY_READS = 20_000  # earlier runs read for one decision: a 10-week outage at 5 min


def should_send(
    summary: Mapping[str, Any],
    previous_summary: Mapping[str, Any] | None,
    policy: str,
    *,
    repeat_failure_hours: float = EmailSettings.repeat_failure_hours,
    now: datetime | None = None,
) -> tuple[bool, str]:
    """Whether this run's mail goes out under ``policy``, and why (the reason is logged),
    judged against ``previous_summary`` alone (``notify`` also weighs the outbox and flap
    damping: ``mail.policy.decide``).

    ============  ===========  ==========  ==========  =======
    policy        failed       attention   ok          yielded
    ============  ===========  ==========  ==========  =======
    always        send         send        send        send
    on-change     if new [1]_  if changed  if changed  never
    on-attention  if new [1]_  send        never       never
    ============  ===========  ==========  ==========  =======

    ``previous_summary`` is the previous run of the same mode whose mail did not fail
    (``find_previous_summary``).

    .. [1] *New* means the previous run did not fail with the same ``error.step`` and
       ``error.type`` (or there is no previous run). A failure that persists is mailed again
       as a reminder when the next one is due: every ``repeat_failure_hours`` counted from the
       failure's first run (``failure_since``), or if there is no record of a mail about it.

    *Changed* means, against the previous run: a live run created transfers or IDs (a dry run:
    its planned counts differ); an anomaly (kind, project, message) appeared or disappeared;
    an audit's count of a finding differs from the previous audit's; the status differs; or
    there is no previous run to compare with.
    """
    history = MailHistory(previous_summary, (previous_summary,) if previous_summary else ())
    rules = MailRules(policy, repeat_failure_hours)
    decision = decide(summary, history, rules, now or datetime.now(UTC))
    return decision.send, decision.reason


def _mail_failed(summary: Mapping[str, Any]) -> bool:
    """The run's mail was due but did not go out (``email`` has ``sent: false`` and an error)."""
    entry = summary.get("email")
    return isinstance(entry, Mapping) and entry.get("sent") is False and bool(entry.get("error"))


def _delivered(summary: Mapping[str, Any]) -> bool:
    entry = summary.get("email")
    return isinstance(entry, Mapping) and entry.get("sent") is True


def _yielded(summary: Mapping[str, Any]) -> bool:
    """The run yielded to another (it wrote nothing): ``mail.policy``'s history leaves it out."""
    return summary.get("status") == Status.YIELDED


def _news_of(summary: Mapping[str, Any]) -> tuple[str, ...]:
    """What a run whose mail failed had to say (``email.news``; older runs: its ``reason``)."""
    entry = summary.get("email")
    if not isinstance(entry, Mapping):
        return ()
    news = entry.get("news")
    if isinstance(news, list):
        return tuple(str(item) for item in news if isinstance(item, str))
    reason = entry.get("reason")
    return (reason,) if isinstance(reason, str) and reason else ()


def _earlier_runs(
    reports_dir: Path | str, current_run: Path | str
) -> Iterator[tuple[Path, Summary | None]]:
    """Earlier run folders of ``current_run``'s mode, newest first in the history's order
    (sequence numbers), each with its summary (None if unreadable)."""
    current_path = Path(reports_dir) / Path(current_run).name
    current = parse_run_folder(current_path.name)
    if current is None:
        log.warning("%s is not a run folder name; no previous run to compare with", current_run)
        return
    key = history_key(current._replace(seq=run_sequence(current_path)), current_path.name)
    for path, parsed in reversed(run_folders(reports_dir)):
        if parsed.mode == current.mode and history_key(parsed, path.name) < key:
            yield path, read_summary(path)


def find_previous_summary(reports_dir: Path | str, current_run: Path | str) -> Summary | None:
    """The ``summary.json`` of the latest run before ``current_run`` with the same mode whose
    mail did not fail ("latest" in the run history's order, never by the clock).

    ``current_run`` is the run folder (or its name). Runs whose summary is missing or unreadable
    are passed over, and so are runs whose mail failed (``email`` with ``sent: false`` and an
    ``error``): what they had to say waits in the outbox (``mail_history``), and this run is
    compared with the run before them. A run whose mail was sent, deliberately not sent (the
    policy), or not attempted (no ``--email``) counts; one that yielded to another run does not
    (``_yielded``). None if there is no such earlier run.
    """
    for path, previous in _earlier_runs(reports_dir, current_run):
        if previous is None:
            log.info("passing over %s: no readable summary.json", path.name)
        elif _yielded(previous):
            log.info("passing over %s: it yielded to another run", path.name)
        elif _mail_failed(previous):
            log.info("passing over %s: its mail failed, compare with the run before", path.name)
        else:
            return previous
    return None


def mail_history(
    reports_dir: Path | str, current_run: Path | str, flap: FlapRule | None = None
) -> MailHistory:
    """The earlier runs ``mail.policy.decide`` weighs: the previous run (as
    ``find_previous_summary``), the ``flap.window_runs`` runs just before, and the outbox:
    the news of runs whose mail failed since the last mail that was delivered. Runs that
    yielded to another are left out (a delivered mail of one still closes the outbox)."""
    flap = flap or FlapRule()
    previous: Summary | None = None
    recent: list[Summary] = []
    undelivered: list[Undelivered] = []
    outbox_open = True
    for reads, (path, summary) in enumerate(_earlier_runs(reports_dir, current_run)):
        if summary is None:
            continue
        if _yielded(summary):  # no news, no status: it says nothing about the job
            outbox_open = outbox_open and not _delivered(summary)
            continue
        if len(recent) < flap.window_runs:
            recent.append(summary)
        if previous is None and not _mail_failed(summary):
            previous = summary
        if outbox_open and _delivered(summary):
            outbox_open = False
        elif outbox_open and _mail_failed(summary) and (news := _news_of(summary)):
            started = summary.get("started")
            undelivered.append(
                Undelivered(path.name, started if isinstance(started, str) else None, news)
            )
        done = previous is not None and len(recent) >= flap.window_runs and not outbox_open
        if done or reads >= MAX_HISTORY_READS:
            break
    return MailHistory(previous, tuple(recent), tuple(reversed(undelivered)))


def send_message(message: EmailMessage, settings: EmailSettings) -> dict[str, tuple[int, bytes]]:
    """Deliver ``message`` to ``settings.recipients``; returns the recipients refused.

    Raises ``smtplib.SMTPException`` or ``OSError`` (``ssl.SSLError``, timeouts) on failure;
    ``notify`` turns these into a report. TLS always verifies the server's certificate.
    """
    with _session(settings) as client:
        return client.send_message(
            message, from_addr=settings.sender, to_addrs=list(settings.recipients)
        )


def probe_server(settings: EmailSettings) -> str:
    """What ``autoid check`` asks of the mail server: everything a run does before it sends
    (connect, TLS as configured, the login), and nothing is sent. Raises like
    ``send_message``; ``describe_failure`` says it in one line."""
    with _session(settings):
        pass
    login = f", logged in as {settings.username}" if settings.username else ""
    return f"{settings.smtp_host}:{settings.smtp_port} ({settings.security}{login})"


@contextlib.contextmanager
def _session(settings: EmailSettings) -> Iterator[smtplib.SMTP]:
    """An SMTP session ready to send: the one way the kit opens one (send and check)."""
    timeout = settings.timeout_s
    context = tls_context(settings) if settings.security != "none" else None
    client: smtplib.SMTP  # SMTP_SSL is an SMTP
    if settings.security == "tls":
        client = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with client:
        client.ehlo()
        if settings.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.username and settings.password:
            client.login(settings.username, settings.password.reveal())
        yield client


def tls_context(settings: EmailSettings) -> ssl.SSLContext:
    """The system's trusted CAs plus ``tls_ca_file``'s, if set (an addition, not a
    replacement: ``create_default_context(cafile=...)`` would drop the system's)."""
    context = ssl.create_default_context()
    if settings.tls_ca_file:
        context.load_verify_locations(cafile=settings.tls_ca_file)
    return context


def notify(
    summary: Mapping[str, Any],
    run_dir: Path | str,
    settings: EmailSettings | None,
    previous: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Decide, compose and send the mail for one run or audit; the ``email`` entry for
    summary.json.

    ``run_dir`` is the run's folder (``reports/<timestamp>-<mode>/``); its report is linked
    or attached. The earlier runs are read beside it (``mail_history``) unless ``previous``
    is given (then it alone is the history: no outbox). ``now`` is the run's time (default:
    the summary's ``started``), which schedules reminders. Never raises for mail trouble:
    returns ``{"sent": False, "error": "..."}``.

    Besides ``sent``, ``reason`` and ``error`` the entry records what the next runs need:
    ``news`` (what this run had to say: kept in the outbox if the mail failed), ``carried``
    (how many earlier news this mail carried), ``flap`` (flap damping's state) and, for a
    failed run, ``failure_since`` and ``failure_mailed`` (ISO 8601, UTC: when this failure's
    first run started; the run time of the last mail about it, null if none went out).
    """
    if settings is None:
        return {"sent": False, "reason": "mail is not configured", "error": None}
    run_dir = Path(run_dir)
    moment = aware(now or parse_time(summary.get("started")) or datetime.now(UTC))
    if previous is not None:
        history = MailHistory(previous, (previous,))
    else:
        try:
            history = mail_history(run_dir.parent, run_dir)
        except OSError as error:
            log.warning("cannot read earlier runs in %s: %s", run_dir.parent, error)
            history = MailHistory()
    rules = MailRules(settings.send, settings.repeat_failure_hours)
    decision = decide(summary, history, rules, moment)
    reason = decision.reason
    entry = {"sent": False, "reason": reason, "error": None, **_state(summary, decision)}
    if not decision.send:
        log.info("no mail: %s", reason)
        return entry

    report_path = run_dir / Path(str(summary.get("report") or REPORT_FILE)).name
    try:
        message = compose_message(summary, settings, report_path, now=moment)
        message = with_history_note(message, decision)
        refused = send_message(message, settings)
    except (smtplib.SMTPException, OSError) as error:
        text = describe_failure(error, settings)
        log.warning("mail not sent (%s): %s", reason, text)
        return _undelivered(entry, decision, text)
    except Exception as error:  # a composing bug must not fail a run whose work is done
        text = _clean(f"{type(error).__name__}: {error}", settings)
        log.error("mail not composed (%s): %s", reason, text, exc_info=True)
        return _undelivered(entry, decision, text)

    accepted = len(settings.recipients) - len(refused)
    log.info("mail sent to %d recipient(s) (%s): %s", accepted, reason, message["Subject"])
    result = {
        **entry,
        "sent": True,
        "subject": str(message["Subject"]),
        "recipients": accepted,
    }
    if summary.get("status") == "failed":
        result["failure_mailed"] = iso(moment)
    if refused:
        result["error"] = _clean(
            "some recipients refused: "
            + ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in refused.items()),
            settings,
        )
        log.warning("mail: %s", result["error"])
    return result


def _state(summary: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The decision's record for the next runs (``failure_*`` only on a failed run)."""
    state = decision.entry()
    if summary.get("status") == "failed":
        state["failure_since"] = decision.failure_since
        state["failure_mailed"] = decision.failure_mailed
    return state


def _undelivered(entry: dict[str, Any], decision: Decision, error: str) -> dict[str, Any]:
    """The entry of a mail that did not go out: its ``news`` waits in the outbox for the next
    mail (the earlier news are still there), and a failure stays unmailed."""
    result = {**entry, "error": error}
    result.pop("carried", None)
    result["news"] = list(decision.news)  # [] too: older entries without it fall back on reason
    return result


def describe_failure(error: BaseException, settings: EmailSettings) -> str:
    """One line an operator can act on; never the password."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(
            f"{rcpt} ({code} {_decode(msg)})" for rcpt, (code, msg) in error.recipients.items()
        )
        text = f"{where} refused every recipient: {refused}"
    elif isinstance(error, smtplib.SMTPAuthenticationError):
        text = f"{where} refused the login of {settings.username}: {error.smtp_code} " + _decode(
            error.smtp_error
        )
    elif isinstance(error, smtplib.SMTPResponseException):
        text = f"{where} answered {error.smtp_code} {_decode(error.smtp_error)}"
    elif isinstance(error, smtplib.SMTPNotSupportedError):
        text = f"{where} does not support {error}; check security (none | starttls | tls)"
    elif isinstance(error, ssl.SSLError | ssl.CertificateError):
        text = f"TLS with {where} failed: {getattr(error, 'reason', None) or error}"
    elif isinstance(error, TimeoutError):
        text = f"{where} did not answer within {settings.timeout_s:g} s"
    elif isinstance(error, OSError) and error.strerror:
        text = f"cannot reach {where}: {error.strerror}"
    else:
        text = f"{where}: {type(error).__name__}: {error}"
    return _clean(text, settings)


def _clean(text: str, settings: EmailSettings) -> str:
    if settings.password is not None:
        text = redact(text, [settings.password])
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 500 else text[:499] + "…"


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
