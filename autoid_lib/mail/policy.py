"""When a run's mail goes out: the send policy over the run history. Pure: no I/O, no clock.

``decide(summary, history, rules, when)`` looks at three things the I/O edge
(``mail.send.mail_history``) read from earlier runs of the same mode, in the history's order
(sequence numbers, never the clock):

- ``previous``: the run to compare with (the latest whose mail did not fail), for
  ``on-change`` and for telling a new failure from one that persists;
- ``recent``: the runs just before, whatever their mail did, for flap damping;
- ``undelivered``: the *outbox*, what earlier runs had to say but no delivered mail carried
  yet (their mail failed). The next mail that goes out carries all of it, once.

A failure that persists is mailed again on a schedule counted from its first run: reminder k
is due at ``first + k * repeat_failure_hours`` (less ``REMINDER_GRACE``, so a run that starts a
few seconds early does not push it a whole interval).

Flap damping: when the status changed ``FlapRule.changes`` times within the last
``FlapRule.window_runs`` runs (this one included), one "flapping" mail goes out and mails about
status changes and failures stop until the status has held for ``FlapRule.stable_runs`` runs in
a row; then one "stable again" mail. News that is not about the status (transfers created,
anomalies, findings) is still mailed under ``on-change``.

A run that yielded to another (``Status.YIELDED``: another run holds the REDCap lease, this one
wrote nothing, exit 3) is no news: it is mailed only under ``always``, and the history leaves
it out (``mail.send.mail_history``), so it neither changes the status nor breaks a failure's
streak or its reminders.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from autoid_lib.errors import ConfigError
from autoid_lib.mail.settings import SEND_POLICIES
from autoid_lib.vocab import Status

REMINDER_GRACE = timedelta(minutes=2)  # at most half the reminder interval
FLAPPING = "flapping"
STABLE = "stable"


@dataclass(frozen=True)
class FlapRule:
    """The status flaps when it changed ``changes`` times within ``window_runs`` runs; quiet
    until it has held for ``stable_runs`` runs. With the defaults a status that alternates
    every run sends 3 mails in all (the first failure, the recovery, "flapping"), and no
    sequence of ok and failed runs sends more than 5 mails in any 12 consecutive runs under
    ``on-change``, 4 under ``on-attention`` (tests/test_mail_history.py)."""

    changes: int = 3
    window_runs: int = 12
    stable_runs: int = 6


@dataclass(frozen=True)
class Undelivered:
    """One earlier run's news that no delivered mail has carried yet."""

    folder: str
    started: str | None
    news: tuple[str, ...]


@dataclass(frozen=True)
class MailHistory:
    """What earlier runs of the same mode say, newest first (``mail.send.mail_history``)."""

    previous: Mapping[str, Any] | None = None
    recent: Sequence[Mapping[str, Any]] = ()
    undelivered: Sequence[Undelivered] = ()  # oldest first


@dataclass(frozen=True)
class MailRules:
    policy: str = "on-change"
    repeat_failure_hours: float = 6.0
    flap: FlapRule = field(default_factory=FlapRule)


@dataclass(frozen=True)
class Decision:
    """Whether the mail goes out, why, and what the run records for the next ones."""

    send: bool
    reason: str
    news: tuple[str, ...] = ()  # this run's own news: the outbox keeps it if the mail fails
    carried: tuple[Undelivered, ...] = ()  # earlier news this mail carries
    flap: str | None = None  # FLAPPING while damped, STABLE on the run that ends it
    flap_news: str | None = None  # set when this mail is the "flapping" or "stable again" one
    failure_since: str | None = None  # a failed run: when this failure's first run started
    failure_mailed: str | None = None  # a failed run: the run time of the last mail about it
    # before this one (``notify`` sets this run's time once its mail is delivered)

    def entry(self) -> dict[str, Any]:
        """The keys this decision adds to summary.json's ``email`` entry (``news`` is added
        only if the mail is not delivered: ``mail.send.notify``)."""
        extra: dict[str, Any] = {}
        if self.carried:
            extra["carried"] = sum(len(u.news) for u in self.carried)
        if self.flap:
            extra["flap"] = self.flap
        return extra


def decide(
    summary: Mapping[str, Any], history: MailHistory, rules: MailRules, when: datetime
) -> Decision:
    """The mail decision for one run (see the module docstring)."""
    if rules.policy not in SEND_POLICIES:
        raise ConfigError(
            f"send policy must be one of {', '.join(SEND_POLICIES)}, not {rules.policy!r}"
        )
    when = aware(when)
    if summary.get("status") == Status.YIELDED:
        return _yield_decision(history, rules)
    previous = history.previous
    kind, reason = _own_news(summary, previous, rules, when)
    failure = _failure_times(summary, previous, when)
    flap, action, flap_reason = _flap(summary, history.recent, rules, kind)
    if action == "quiet" and kind in ("status", "failure"):
        kind, reason = None, flap_reason  # the status goes up and down: quiet until it holds
    elif action == "send":
        kind, reason = "flap", flap_reason
    news = (reason,) if kind is not None else ()
    send = kind is not None or rules.policy == "always"
    if rules.policy == "always":
        reason = "the run failed" if summary.get("status") == "failed" else "send = always"
    carried = tuple(history.undelivered)
    if carried and not send:
        count = sum(len(u.news) for u in carried)
        send, reason = True, f"{count} earlier news never mailed ({carried[-1].news[-1]})"
    return Decision(
        send=send,
        reason=reason,
        news=news,
        carried=carried if send else (),
        flap=flap,
        flap_news=flap_reason if action == "send" else None,
        failure_since=failure.get("since"),
        failure_mailed=failure.get("carried_mailed"),
    )


def _yield_decision(history: MailHistory, rules: MailRules) -> Decision:
    """A yield is mailed under ``always`` only (carrying the outbox then); otherwise the outbox
    waits for the next run that did its work."""
    if rules.policy != "always":
        return Decision(
            send=False,
            reason="the run yielded to another run and wrote nothing: no news "
            f"(send = {rules.policy})",
        )
    return Decision(send=True, reason="send = always", carried=tuple(history.undelivered))


# -- this run's own news ----------------------------------------------------------------------


def _own_news(
    summary: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    rules: MailRules,
    when: datetime,
) -> tuple[str | None, str]:
    """The kind of this run's news ("failure", "status", "content", or None) and why.

    Under ``always`` this is the news ``on-change`` would mail (what the outbox keeps)."""
    status = summary.get("status")
    if status == "failed":
        return _failure_news(summary, previous, rules.repeat_failure_hours, when)
    if rules.policy == "on-attention":
        if status == "ok":
            return None, "status ok and send = on-attention"
        return "status", f"status {status}"
    return _changed(summary, previous)


def _failure_news(
    summary: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    repeat_hours: float,
    when: datetime,
) -> tuple[str | None, str]:
    """A new failure, or a reminder of one that persists when its next reminder is due."""
    if not same_failure(summary, previous):
        return "failure", "the run failed"
    step = failure_key(summary)[0] or "an unknown step"
    times = _failure_times(summary, previous, when)
    last = parse_time(times.get("carried_mailed"))
    if last is None:
        return "failure", f"the run failed again at {step}; no record of a mail about it"
    since = parse_time(times.get("since")) or last
    every = timedelta(hours=repeat_hours)
    grace = min(REMINDER_GRACE, every / 2)
    if _reminder_number(when, since, every, grace) > _reminder_number(last, since, every, grace):
        return (
            "failure",
            f"reminder: the run still fails at {step}, last mailed {hours(when - last)} ago",
        )
    return None, (
        f"the run failed again at {step}, as mailed {hours(when - last)} ago; "
        f"reminders go out every {repeat_hours:g} h from its first run"
    )


def _reminder_number(moment: datetime, since: datetime, every: timedelta, grace: timedelta) -> int:
    """Which reminder is due at ``moment`` (0: none yet), counted from the failure's start."""
    return math.floor((moment - since + grace) / every)


def _failure_times(
    summary: Mapping[str, Any], previous: Mapping[str, Any] | None, when: datetime
) -> dict[str, str | None]:
    """A failed run's ``since`` (its failure's first run) and the last mail about it so far."""
    if summary.get("status") != "failed":
        return {}
    if not same_failure(summary, previous):
        return {"since": iso(when), "carried_mailed": None}
    entry = _email(previous)
    mailed = entry.get("failure_mailed") if isinstance(entry.get("failure_mailed"), str) else None
    since = entry.get("failure_since") if isinstance(entry.get("failure_since"), str) else None
    started = previous.get("started") if previous is not None else None
    first = since or mailed or (started if isinstance(started, str) else None) or iso(when)
    return {"since": first, "carried_mailed": mailed}


def failure_key(summary: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``error.step`` and ``error.type`` of a failed run (None, None without an error)."""
    error = summary.get("error")
    if not isinstance(error, Mapping):
        return None, None
    return error.get("step"), error.get("type")


def same_failure(summary: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Both runs failed, at the same step with the same error type."""
    return (
        previous is not None
        and summary.get("status") == "failed"
        and previous.get("status") == "failed"
        and failure_key(summary) == failure_key(previous)
    )


def _changed(
    summary: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> tuple[str | None, str]:
    if previous is None:
        return "status", "no previous run to compare with"
    if summary.get("status") != previous.get("status"):
        return "status", f"status changed from {previous.get('status')} to {summary.get('status')}"
    created = {key: _count(summary.get(key)) for key in ("transfers_created", "ids_created")}
    if summary.get("mode") == "dry":
        planned = {key: _count(previous.get(key)) for key in created}
        if created != planned:
            return "content", "the planned changes differ from the previous dry run"
    elif any(created.values()):
        return "content", (
            "{transfers_created} transfers and {ids_created} IDs created".format(**created)
        )
    if summary.get("mode") == "audit" and _finding_counts(summary) != _finding_counts(previous):
        return "content", "the findings' counts differ from the previous audit"
    now, before = _anomaly_keys(summary), _anomaly_keys(previous)
    if now != before:
        return "content", f"{len(now - before)} anomalies appeared, {len(before - now)} disappeared"
    return None, "nothing changed since the previous run"


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


# -- flap damping -------------------------------------------------------------------------------


def _flap(
    summary: Mapping[str, Any],
    recent: Sequence[Mapping[str, Any]],
    rules: MailRules,
    kind: str | None,
) -> tuple[str | None, str | None, str]:
    """The run's flap state, what damping does ("send", "quiet" or "" for nothing), and why."""
    if rules.policy == "always":
        return None, None, ""
    rule = rules.flap
    statuses = [summary.get("status")] + [r.get("status") for r in recent]
    if _email(recent[0] if recent else None).get("flap") == FLAPPING:
        held = _leading_run(statuses)
        if held >= rule.stable_runs:
            status = summary.get("status")
            return STABLE, "send", f"stable again: status {status} for {held} runs after flapping"
        return (
            FLAPPING,
            "quiet",
            (
                f"the status is flapping; no mail about it until it holds for {rule.stable_runs} "
                f"runs (now {held})"
            ),
        )
    window = statuses[: rule.window_runs]
    changes = sum(a != b for a, b in itertools.pairwise(window))
    changed_now = len(statuses) > 1 and statuses[0] != statuses[1]
    if kind in ("status", "failure") and changed_now and changes >= rule.changes:
        return (
            FLAPPING,
            "send",
            (
                f"the status is flapping: it changed {changes} times in the last {len(window)} "
                f"runs; no more mails about it until it holds for {rule.stable_runs} runs"
            ),
        )
    return None, None, ""


def _leading_run(statuses: Sequence[Any]) -> int:
    """How many runs in a row, from the newest, have the newest's status."""
    held = 0
    for status in statuses:
        if status != statuses[0]:
            break
        held += 1
    return held


# -- small helpers -----------------------------------------------------------------------------


def _email(summary: Mapping[str, Any] | None) -> Mapping[str, Any]:
    entry = summary.get("email") if summary is not None else None
    return entry if isinstance(entry, Mapping) else {}


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


def hours(age: timedelta) -> str:
    return f"{max(age.total_seconds(), 0) / 3600:.1f} h"
