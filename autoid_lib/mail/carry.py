"""What a mail carries beyond its own run: the outbox's earlier news and flap damping's word.

``with_history_note(message, decision)`` adds, above the body of a composed mail (both its
plain text and its HTML alternative), the news of earlier runs whose mail failed
(``Decision.carried``) and, for the "flapping" and "stable again" mails, why this mail is
the one that goes out; the subject says so too. The news are the kit's own sentences from
``mail.policy`` (counts and statuses, never patient data). A mail with nothing to add is
returned unchanged.
"""

from __future__ import annotations

import html
import re
from email.message import EmailMessage

from autoid_lib.mail.policy import FLAPPING, STABLE, Decision

MAX_LINES = 20  # earlier news listed; the rest are counted


def history_lines(decision: Decision) -> list[str]:
    """The note's lines: the flap word first, then earlier news, repeats folded together."""
    lines = [decision.flap_news] if decision.flap_news else []
    folded: list[tuple[str, str, str, int]] = []  # (first run, last run, news, runs)
    for run in decision.carried:
        when = run.started or run.folder
        for news in run.news:
            if folded and folded[-1][2] == news:
                folded[-1] = (folded[-1][0], when, news, folded[-1][3] + 1)
            else:
                folded.append((when, when, news, 1))
    if folded:
        lines.append("Not mailed before (these runs' mail could not be sent):")
        for first, last, news, runs in folded[:MAX_LINES]:
            when = f"runs of {first} to {last} ({runs} runs)" if runs > 1 else f"run of {first}"
            lines.append(f"- {when}: {news}")
        if len(folded) > MAX_LINES:
            lines.append(f"- … and {len(folded) - MAX_LINES} more")
    return lines


def with_history_note(message: EmailMessage, decision: Decision) -> EmailMessage:
    """``message`` with the history note above its body and a subject that says why."""
    lines = history_lines(decision)
    if not lines:
        return message
    suffix = _subject_suffix(decision)
    if suffix:
        subject = str(message["Subject"])
        message.replace_header("Subject", f"{subject} · {suffix}")
    text_part = message.get_body(("plain",))
    if text_part is not None:
        text_part.set_content("\n".join(lines) + "\n\n" + text_part.get_content())
    html_part = message.get_body(("html",))
    if html_part is not None:
        note = (
            '<div style="border:1px solid #d8dde2;background:#f3f5f7;padding:8px 12px;'
            'margin:0 0 12px;font:14px/1.45 sans-serif">'
            + "<br>".join(html.escape(line) for line in lines)
            + "</div>"
        )
        body = html_part.get_content()
        body, found = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + note, body, count=1)
        html_part.set_content(body if found else note + body, subtype="html")
    return message


def _subject_suffix(decision: Decision) -> str | None:
    if decision.flap_news and decision.flap == FLAPPING:
        return "status flapping"
    if decision.flap_news and decision.flap == STABLE:
        return "stable again"
    if decision.carried:
        return f"+{sum(len(run.news) for run in decision.carried)} earlier not mailed"
    return None
