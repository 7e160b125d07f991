"""``autoid gen-id``: a drop-in for the legacy ``gen-id.py``, with exact uniqueness.

Existing scripts call ``gen-id.py -r PATTERN -e FILE -a``; the same flags work here. The
exclusion file is read the way an operator means it (one ID per line, line endings, a BOM and
surrounding whitespace ignored, blank lines skipped, a missing file is empty), which fixes
legacy defect 1: the old tool kept line endings and so returned IDs already in use.

With ``-a`` the exclusion file is held under an exclusive ``flock`` from reading it until
the new IDs are appended, so concurrent ``gen-id -a`` calls on one file never hand out the
same ID (every caller must use ``-a``, or take the same lock, for this to hold).

Exit status: 0 with one ID per line on stdout; 1 when the space is exhausted; 2 for a bad
pattern or command line. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


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


def parse_ids(data: bytes) -> set[str]:
    """IDs in an exclusion file's bytes, one per line; whitespace, CR/LF, a BOM and blank lines
    are ignored (``UnicodeDecodeError`` when the file is not UTF-8)."""
    text = data.decode("utf-8-sig")
    return {line.strip() for line in text.splitlines() if line.strip()}


def read_id_file(path: str | Path) -> set[str]:
    """IDs in ``path`` (see ``parse_ids``); a missing file is empty."""
    try:
        return parse_ids(Path(path).read_bytes())
    except FileNotFoundError:
        return set()


@contextlib.contextmanager
def locked_id_file(path: str | Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading and appending (created if missing), under an exclusive
    ``flock`` that is held until the block ends and the file is closed."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # a new file is private
    with os.fdopen(fd, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        fh.seek(0)
        yield fh


def append_ids(fh: BinaryIO, existing: bytes, ids: list[str]) -> None:
    """Append ``ids`` to the file ``fh`` whose content is ``existing``, keeping its line ending
    and ending a last open line; flushed before returning."""
    newline = "\r\n" if b"\r\n" in existing else "\n"
    lead = newline if existing and not existing.endswith((b"\n", b"\r")) else ""
    fh.write((lead + "".join(value + newline for value in ids)).encode("utf-8"))
    fh.flush()


def _fail(message: str, status: int) -> int:
    print(f"autoid gen-id: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    from autoid_lib.errors import PatternError
    from autoid_lib.ids.generate import capacity
    from autoid_lib.ids.space import compile_pattern
    from autoid_lib.status import ExitStatus

    if args.auto_add and not args.exclusion_file:
        return _fail("--auto_add needs --exclusion_file", ExitStatus.CONFIG)
    try:
        space = compile_pattern(args.regexp)
    except PatternError as exc:
        return _fail(str(exc), ExitStatus.CONFIG)

    if args.capacity or not args.auto_add:
        try:
            in_use = read_id_file(args.exclusion_file) if args.exclusion_file else set()
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(_cannot_read(args.exclusion_file, exc), ExitStatus.CONFIG)
        if args.capacity:
            for key, value in capacity(space, in_use).as_dict().items():
                print(f"{key}: {value}")
            return ExitStatus.OK
        ids = _draw(space, in_use, args)
    else:  # -a: read, generate and append under one lock, so concurrent calls never collide
        try:
            with locked_id_file(args.exclusion_file) as fh:
                try:
                    existing = fh.read()
                    in_use = parse_ids(existing)
                except (OSError, UnicodeDecodeError) as exc:
                    return _fail(_cannot_read(args.exclusion_file, exc), ExitStatus.CONFIG)
                ids = _draw(space, in_use, args)
                if isinstance(ids, int):
                    return ids
                try:
                    append_ids(fh, existing, ids)
                except OSError as exc:  # print nothing: an ID not recorded must not be handed out
                    return _fail(
                        f"cannot append to {args.exclusion_file}: {exc}", ExitStatus.FAILED
                    )
        except OSError as exc:  # opening or locking the file
            return _fail(_cannot_read(args.exclusion_file, exc), ExitStatus.CONFIG)
    if isinstance(ids, int):
        return ids
    print("\n".join(ids))
    return ExitStatus.OK


def _cannot_read(path: str, exc: Exception) -> str:
    return f"cannot read exclusion file {path}: {exc}"


def _draw(space, in_use: set[str], args: argparse.Namespace) -> list[str] | int:
    """The new IDs, or the exit status after reporting an exhausted space."""
    from autoid_lib.errors import IdSpaceExhausted
    from autoid_lib.ids.generate import generate_ids
    from autoid_lib.status import ExitStatus

    try:
        return generate_ids(space, in_use, args.number, args.seed)
    except IdSpaceExhausted as exc:
        notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
        return _fail(f"{exc}{notes}", ExitStatus.FAILED)
