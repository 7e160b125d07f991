"""``autoid gen-id``: a drop-in for the legacy ``gen-id.py``, with exact uniqueness.

Existing scripts call ``gen-id.py -r PATTERN -e FILE -a``; the same flags work here. The
exclusion file is read the way an operator means it (one ID per line, line endings, a BOM and
surrounding whitespace ignored, blank lines skipped, a missing file is empty), which fixes
legacy defect 1: the old tool kept line endings and so returned IDs already in use.

Exit status: 0 with one ID per line on stdout; 1 when the space is exhausted; 2 for a bad
pattern or command line. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-r",
        "--regexp",
        required=True,
        metavar="PATTERN",
        help="the naming pattern, e.g. P_0\\d{4}",
    )
    parser.add_argument(
        "-e",
        "--exclusion_file",
        metavar="FILE",
        help="IDs already in use, one per line (a missing file counts as empty)",
    )
    parser.add_argument(
        "-a",
        "--auto_add",
        action="store_true",
        help="append the new IDs to the exclusion file (created if missing)",
    )
    parser.add_argument(
        "-n", "--number", type=_positive_int, default=1, metavar="N", help="how many IDs"
    )
    parser.add_argument(
        "-m",
        "--method",
        choices=["random-id"],
        default="random-id",
        help="generation method (only random-id)",
    )
    parser.add_argument("--seed", type=int, help="repeatable output, for tests only")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="print size, used and free of the pattern's space instead of generating",
    )


def read_id_file(path: str | Path) -> set[str]:
    """IDs in ``path``, one per line; whitespace, CR/LF, a BOM and blank lines are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def append_ids(path: str | Path, ids: list[str]) -> None:
    """Append ``ids`` to ``path``, keeping the file's line ending and ending a last open line."""
    path = Path(path)
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        existing = b""
    newline = "\r\n" if b"\r\n" in existing else "\n"
    lead = newline if existing and not existing.endswith((b"\n", b"\r")) else ""
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(lead + "".join(value + newline for value in ids))


def _fail(message: str, status: int) -> int:
    print(f"autoid gen-id: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    from autoid_lib.cli import ExitStatus
    from autoid_lib.errors import IdSpaceExhausted, PatternError
    from autoid_lib.idgen import capacity, generate_ids
    from autoid_lib.patterns import compile_pattern

    if args.auto_add and not args.exclusion_file:
        return _fail("--auto_add needs --exclusion_file", ExitStatus.CONFIG)
    try:
        space = compile_pattern(args.regexp)
    except PatternError as exc:
        return _fail(str(exc), ExitStatus.CONFIG)
    try:
        in_use = read_id_file(args.exclusion_file) if args.exclusion_file else set()
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read exclusion file {args.exclusion_file}: {exc}", ExitStatus.CONFIG)

    if args.capacity:
        report = capacity(space, in_use)
        for key, value in report.as_dict().items():
            print(f"{key}: {value}")
        return ExitStatus.OK

    try:
        ids = generate_ids(space, in_use, args.number, args.seed)
    except IdSpaceExhausted as exc:
        notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
        return _fail(f"{exc}{notes}", ExitStatus.FAILED)
    if args.auto_add:
        try:
            append_ids(args.exclusion_file, ids)
        except OSError as exc:  # print nothing: an ID not recorded must not be handed out
            return _fail(f"cannot append to {args.exclusion_file}: {exc}", ExitStatus.FAILED)
    print("\n".join(ids))
    return ExitStatus.OK
