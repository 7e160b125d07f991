"""E-mailed run and audit reports: when to send, SMTP delivery and ``notify`` (the ``[email]``
settings are checked in ``mail.settings``).

``notify(summary, run_dir, settings)`` is the one call ``autoid run --email`` and
``autoid audit --email`` make after the REDCap work is done: it decides (``should_send``),
composes from ``summary.json`` alone (``autoid_lib.mail.compose``), sends with ``smtplib`` and
returns the ``email`` entry for ``summary.json``. It never raises on SMTP or network trouble:
a mail failure is logged on ``autoid.mail`` and reported, and never fails or repeats the run.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from autoid_lib.errors import ConfigError
from autoid_lib.mail.compose import compose_message
from autoid_lib.mail.settings import SEND_POLICIES, EmailSettings, email_settings_from_config
from autoid_lib.records.folders import REPORT_FILE, parse_run_folder, read_summary, run_folders
from autoid_lib.records.summary import Summary
from autoid_lib.secret import redact

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


def should_send(
    summary: Mapping[str, Any],
    previous_summary: Mapping[str, Any] | None,
    policy: str,
    *,
    repeat_failure_hours: float = EmailSettings.repeat_failure_hours,
    now: datetime | None = None,
) -> tuple[bool, str]:
    """Whether this run's mail goes out under ``policy``, and why (the reason is logged).

    ============  ===========  ==========  ==========
    policy        failed       attention   ok
    ============  ===========  ==========  ==========
    always        send         send        send
    on-change     if new [1]_  if changed  if changed
    on-attention  if new [1]_  send        never
    ============  ===========  ==========  ==========

    ``previous_summary`` is the previous run of the same mode whose mail did not fail
    (``find_previous_summary``).

    .. [1] *New* means the previous run did not fail with the same ``error.step`` and
       ``error.type`` (or there is no previous run). A failure that persists is mailed again
       as a reminder once the last mail about it (the previous entry's ``failure_mailed``) is
       ``repeat_failure_hours`` old, or if there is no record of such a mail; so an outage
       mails once, then every ``repeat_failure_hours``, not every run.

    *Changed* means, against the previous run: a live run created transfers or IDs (a dry run:
    its planned counts differ); an anomaly (kind, project, message) appeared or disappeared;
    an audit's count of a finding differs from the previous audit's; the status differs; or
    there is no previous run to compare with.
    """
    if policy not in SEND_POLICIES:
        raise ConfigError(f"send policy must be one of {', '.join(SEND_POLICIES)}, not {policy!r}")
    status = summary.get("status")
    if status == "failed":
        if policy == "always":
            return True, "the run failed"
        return _failure_news(summary, previous_summary, repeat_failure_hours, now)
    if policy == "always":
        return True, "send = always"
    if policy == "on-attention":
        if status == "ok":
            return False, "status ok and send = on-attention"
        return True, f"status {status}"
    return _changed(summary, previous_summary)


def _failure_news(
    summary: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    repeat_hours: float,
    now: datetime | None,
) -> tuple[bool, str]:
    """Whether a failed run is news: a new failure, or a reminder of one that persists."""
    if not _same_failure(summary, previous):
        return True, "the run failed"
    step = _failure_key(summary)[0] or "an unknown step"
    last = _failure_mailed(previous)
    if last is None:
        return True, f"the run failed again at {step}; no record of a mail about it"
    age = _aware(now or datetime.now(UTC)) - last
    if age >= timedelta(hours=repeat_hours):
        return True, f"reminder: the run still fails at {step}, last mailed {_hours(age)} ago"
    return False, (
        f"the run failed again at {step}, as mailed {_hours(age)} ago; "
        f"a reminder goes out {repeat_hours:g} h after that mail"
    )


def _failure_key(summary: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``error.step`` and ``error.type`` of a failed run (None, None without an error)."""
    error = summary.get("error")
    if not isinstance(error, Mapping):
        return None, None
    return error.get("step"), error.get("type")


def _same_failure(summary: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Both runs failed, at the same step with the same error type."""
    return (
        previous is not None
        and summary.get("status") == "failed"
        and previous.get("status") == "failed"
        and _failure_key(summary) == _failure_key(previous)
    )


def _failure_mailed(previous: Mapping[str, Any] | None) -> datetime | None:
    """When the last mail about the previous run's failure went out, from its ``email`` entry."""
    entry = previous.get("email") if previous is not None else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("failure_mailed"), str):
        return None
    try:
        return _aware(datetime.fromisoformat(entry["failure_mailed"]))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _hours(age: timedelta) -> str:
    return f"{max(age.total_seconds(), 0) / 3600:.1f} h"


def _mail_failed(summary: Mapping[str, Any]) -> bool:
    """The run's mail was due but did not go out (``email`` has ``sent: false`` and an error)."""
    entry = summary.get("email")
    return isinstance(entry, Mapping) and entry.get("sent") is False and bool(entry.get("error"))


def _changed(summary: Mapping[str, Any], previous: Mapping[str, Any] | None) -> tuple[bool, str]:
    if previous is None:
        return True, "no previous run to compare with"
    if summary.get("status") != previous.get("status"):
        return True, f"status changed from {previous.get('status')} to {summary.get('status')}"
    created = {key: _count(summary.get(key)) for key in ("transfers_created", "ids_created")}
    if summary.get("mode") == "dry":
        before = {key: _count(previous.get(key)) for key in created}
        if created != before:
            return True, "the planned changes differ from the previous dry run"
    elif any(created.values()):
        return True, "{transfers_created} transfers and {ids_created} IDs created".format(**created)
    if summary.get("mode") == "audit" and _finding_counts(summary) != _finding_counts(previous):
        return True, "the findings' counts differ from the previous audit"
    now, before = _anomaly_keys(summary), _anomaly_keys(previous)
    if now != before:
        return True, f"{len(now - before)} anomalies appeared, {len(before - now)} disappeared"
    return False, "nothing changed since the previous run"


def _anomaly_keys(summary: Mapping[str, Any]) -> frozenset[tuple[str, str, str]]:
    anomalies = summary.get("anomalies")
    if not isinstance(anomalies, list):
        return frozenset()
    return frozenset(
        (str(a.get("kind")), str(a.get("project")), str(a.get("message")))
        for a in anomalies
        if isinstance(a, Mapping)
    )


def _finding_counts(summary: Mapping[str, Any]) -> dict[str, int]:
    """An audit summary's ``findings``: count per kind (kinds not found are absent)."""
    findings = summary.get("findings")
    if not isinstance(findings, Mapping):
        return {}
    return {str(kind): _count(count) for kind, count in findings.items() if _count(count)}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def find_previous_summary(reports_dir: Path | str, current_run: Path | str) -> Summary | None:
    """The ``summary.json`` of the latest run before ``current_run`` with the same mode whose
    mail did not fail.

    ``current_run`` is the run folder (or its name). Runs whose summary is missing or unreadable
    are passed over, and so are runs whose mail failed (``email`` with ``sent: false`` and an
    ``error``): what they would have reported was never mailed, so the next run compares with
    the run before them and mails it. A run whose mail was sent, deliberately not sent (the
    policy), or not attempted (no ``--email``) counts. None if there is no such earlier run.
    """
    current = parse_run_folder(Path(current_run).name)
    if current is None:
        log.warning("%s is not a run folder name; no previous run to compare with", current_run)
        return None
    for path, parsed in reversed(run_folders(reports_dir)):
        if parsed.mode != current.mode or parsed.started >= current.started:
            continue
        previous = read_summary(path)
        if previous is None:
            log.info("passing over %s: no readable summary.json", path.name)
            continue
        if _mail_failed(previous):
            log.info("passing over %s: its mail failed, compare with the run before", path.name)
            continue
        return previous
    return None


def send_message(message: EmailMessage, settings: EmailSettings) -> dict[str, tuple[int, bytes]]:
    """Deliver ``message`` to ``settings.recipients``; returns the recipients refused.

    Raises ``smtplib.SMTPException`` or ``OSError`` (``ssl.SSLError``, timeouts) on failure;
    ``notify`` turns these into a report. TLS always verifies the server's certificate.
    """
    timeout = settings.timeout_s
    context = tls_context(settings) if settings.security != "none" else None
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
        return client.send_message(
            message, from_addr=settings.sender, to_addrs=list(settings.recipients)
        )


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
    or attached, and the previous run's summary is looked up beside it unless ``previous`` is
    given. Never raises for mail trouble: returns ``{"sent": False, "error": "..."}``.

    For a failed run the entry also has ``failure_mailed``: when the last mail about this
    failure went out (ISO 8601, UTC; this mail's time if it was sent, else carried over from
    the previous run if that failed the same way; null if none did). The next run reads it to
    decide on a reminder (``should_send``).
    """
    if settings is None:
        return {"sent": False, "reason": "mail is not configured", "error": None}
    run_dir = Path(run_dir)
    moment = _aware(now or datetime.now(UTC))
    if previous is None:
        try:
            previous = find_previous_summary(run_dir.parent, run_dir)
        except OSError as error:
            log.warning("cannot read earlier runs in %s: %s", run_dir.parent, error)
    send, reason = should_send(
        summary,
        previous,
        settings.send,
        repeat_failure_hours=settings.repeat_failure_hours,
        now=moment,
    )
    failure: dict[str, Any] = {}  # the failure_mailed entry of a failed run
    if summary.get("status") == "failed":
        carried = _failure_mailed(previous) if _same_failure(summary, previous) else None
        failure["failure_mailed"] = _iso(carried)
    if not send:
        log.info("no mail: %s", reason)
        return {"sent": False, "reason": reason, "error": None, **failure}

    report_path = run_dir / Path(str(summary.get("report") or REPORT_FILE)).name
    try:
        message = compose_message(summary, settings, report_path, now=moment)
        refused = send_message(message, settings)
    except (smtplib.SMTPException, OSError) as error:
        text = _describe(error, settings)
        log.warning("mail not sent (%s): %s", reason, text)
        return {"sent": False, "reason": reason, "error": text, **failure}
    except Exception as error:  # a composing bug must not fail a run whose work is done
        text = _clean(f"{type(error).__name__}: {error}", settings)
        log.error("mail not composed (%s): %s", reason, text, exc_info=True)
        return {"sent": False, "reason": reason, "error": text, **failure}

    accepted = len(settings.recipients) - len(refused)
    log.info("mail sent to %d recipient(s) (%s): %s", accepted, reason, message["Subject"])
    result = {
        "sent": True,
        "reason": reason,
        "error": None,
        "subject": str(message["Subject"]),
        "recipients": accepted,
    }
    if failure:
        result["failure_mailed"] = _iso(moment)
    if refused:
        result["error"] = _clean(
            "some recipients refused: "
            + ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in refused.items()),
            settings,
        )
        log.warning("mail: %s", result["error"])
    return result


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


def _describe(error: BaseException, settings: EmailSettings) -> str:
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
