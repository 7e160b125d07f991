"""Unique random IDs from a pattern, capacity accounting, and the external generator adapter.

The legacy generator drew random IDs, compared them with an exclusion list that never matched
(line endings kept) and gave up after 20 tries. Here the pattern is a numbered space
(``patterns.PatternSpace``) and generation walks a fresh random permutation of its indices,
lazily (a Fisher–Yates shuffle that stores only the swapped positions), until it meets enough
IDs not in use. That is uniform over the free IDs, never repeats within a call, succeeds
whenever one free ID exists, and proves exhaustion by visiting every index. The expected walk
is ``(size + 1) / (free + 1)`` steps, never more than the number of IDs in use plus one, so a
dense space costs no more than reading the in-use set once.

Randomness comes from the OS (``random.SystemRandom``) unless the caller passes a ``random.Random``
or an integer seed, which tests and ``gen-id --seed`` do. Nothing here reads the clock, the
environment or a configuration file; in-use IDs are passed in.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from autoid_lib.child_env import minimal_environment
from autoid_lib.errors import ExternalGeneratorError, IdSpaceExhausted
from autoid_lib.ids.space import PatternSpace, compile_pattern

__all__ = [
    "Capacity",
    "ExternalGenerator",
    "IdAllocator",
    "as_space",
    "capacity",
    "generate_ids",
]

Pattern = str | PatternSpace
Rng = random.Random | int | None


def as_space(pattern: Pattern) -> PatternSpace:
    """Accept a pattern string or an already compiled space (raises ``PatternError``)."""
    return pattern if isinstance(pattern, PatternSpace) else compile_pattern(pattern)


def _as_rng(rng: Rng) -> random.Random:
    if rng is None:
        return random.SystemRandom()
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    if isinstance(rng, random.Random):
        return rng
    raise TypeError(f"rng must be a random.Random, an int seed or None, not {type(rng).__name__}")


def _as_lookup(in_use: Iterable[str]) -> Collection[str]:
    """Membership in O(1): sets and dicts are used as they are, anything else is copied once."""
    if isinstance(in_use, AbstractSet | dict):
        return in_use
    return set(in_use)


def _random_order(size: int, rng: random.Random) -> Iterator[int]:
    """The indices ``0 .. size - 1`` in uniformly random order, produced lazily.

    Each step of the inside-out Fisher–Yates shuffle costs one random draw and one dict
    entry, so walking ``t`` steps of a space of any size costs O(t).
    """
    moved: dict[int, int] = {}
    for i in range(size):
        j = rng.randrange(i, size)
        value_i = moved.pop(i, i)
        if j == i:
            yield value_i
            continue
        yield moved.get(j, j)
        moved[j] = value_i


def generate_ids(
    pattern: Pattern, in_use: Collection[str], count: int = 1, rng: Rng = None
) -> list[str]:
    """``count`` distinct, uniformly random IDs of ``pattern`` that are not in ``in_use``.

    ``in_use`` may hold values that do not match the pattern; they are simply never produced.
    Pass a ``set`` when calling often: other collections are copied on every call.
    Raises ``IdSpaceExhausted`` (nothing is returned) when fewer than ``count`` IDs are free,
    and ``PatternError`` for a pattern the generator cannot use.
    """
    if count < 0:
        raise ValueError(f"count must be zero or more, not {count}")
    space = as_space(pattern)
    if count == 0:
        return []
    taken = _as_lookup(in_use)
    found: list[str] = []
    for index in _random_order(space.size, _as_rng(rng)):
        candidate = space.unrank(index)
        if candidate not in taken:
            found.append(candidate)
            if len(found) == count:
                return found
    exc = IdSpaceExhausted(space.pattern, space.size, space.size - len(found), requested=count)
    if count > 1:
        exc.add_note(f"{count} IDs were asked for, {len(found)} are free")
    raise exc


class IdAllocator:
    """Hands out IDs of one pattern over many calls, remembering what it handed out.

    Public API for scripts (presented in docs/patterns.md; ``benchmarks/bench_idgen.py`` uses
    it); the kit's own jobs call ``generate_ids`` directly. Use it when one run needs IDs one at
    a time (a new patient per study): no ID is given twice and the in-use set is copied only
    once.
    """

    def __init__(self, pattern: Pattern, in_use: Iterable[str] = (), rng: Rng = None):
        self.space = as_space(pattern)
        self._taken = {value for value in in_use if isinstance(value, str)}
        self._rng = _as_rng(rng)

    def allocate(self, count: int = 1) -> list[str]:
        """``count`` new IDs, now counted as in use; ``IdSpaceExhausted`` when too few are left."""
        ids = generate_ids(self.space, self._taken, count, self._rng)
        self._taken.update(ids)
        return ids

    def capacity(self, warn_at: float = 0.8) -> Capacity:
        return capacity(self.space, self._taken, warn_at)


@dataclass(frozen=True)
class Capacity:
    """How full a pattern's space is, for the run report and ``gen-id --capacity``.

    ``used`` counts the distinct in-use IDs that are IDs of the pattern; values that do not
    match (legacy IDs, typos) take no room. ``level`` is ``"exhausted"`` when no ID is left,
    ``"warning"`` from ``warn_at`` (a fraction) on, else ``"ok"``.
    """

    pattern: str
    size: int
    used: int
    warn_at: float = 0.8

    @property
    def free(self) -> int:
        return self.size - self.used

    @property
    def fraction_used(self) -> float:
        return self.used / self.size

    @property
    def level(self) -> str:
        if self.free == 0:
            return "exhausted"
        return "warning" if self.fraction_used >= self.warn_at else "ok"

    @property
    def description(self) -> str:
        """One line, e.g. ``9,412 of 10,000 IDs used (94%) — widen the pattern soon``."""
        percent = self.used * 100 // self.size
        shown = "<1" if self.used and not percent else str(percent)
        line = f"{_amount(self.used)} of {_amount(self.size)} IDs used ({shown}%)"
        if self.level == "exhausted":
            return line + " — no ID left: widen the pattern now"
        if self.level == "warning":
            return line + " — widen the pattern soon"
        return line

    def as_dict(self) -> dict[str, object]:
        keys = ("pattern", "size", "used", "free", "fraction_used", "level", "description")
        return {key: getattr(self, key) for key in keys}


def _amount(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about {n:.1e}"


def capacity(pattern: Pattern, in_use: Iterable[str], warn_at: float = 0.8) -> Capacity:
    """Size, use and warning level of ``pattern``'s space given the IDs in use."""
    if not 0 < warn_at <= 1:
        raise ValueError(f"warn_at must be a fraction in (0, 1], not {warn_at}")
    space = as_space(pattern)
    used = sum(1 for value in _as_lookup(in_use) if space.contains(value))
    return Capacity(space.pattern, space.size, used, warn_at)


# --- external generator ----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(pattern|exclusion_file)\}")


@dataclass(frozen=True)
class ExternalGenerator:
    """A site's own generator program, called as the legacy job called ``gen-id.py``.

    ``command`` is the argument list, e.g.
    ``["gen-id.py", "-r", "{pattern}", "-e", "{exclusion_file}", "-a"]``; ``{pattern}`` and
    ``{exclusion_file}`` are replaced in each argument. The in-use IDs go to a private
    temporary file (mode 0600, in ``temp_dir``) that is removed after every attempt, also on
    error or timeout.
    An answer counts only if it is one line that fully matches the pattern and is neither in
    use nor already returned; each ID gets ``attempts`` tries, then ``ExternalGeneratorError``.
    """

    command: tuple[str, ...]
    timeout: float = 10.0
    attempts: int = 5
    temp_dir: str | None = None  # where the exclusion file goes (default: the system's)
    env_names: tuple[str, ...] = ()  # passed on besides PATH, locale, HOME, TMPDIR (no secrets)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env_names", tuple(self.env_names))
        if not self.command:
            raise ValueError("the external generator command is empty")
        if self.attempts < 1 or self.timeout <= 0:
            raise ValueError("attempts must be at least 1 and timeout positive")

    def generate_ids(self, pattern: Pattern, in_use: Iterable[str], count: int = 1) -> list[str]:
        """``count`` IDs from the program, each checked; ``ExternalGeneratorError`` otherwise."""
        space = as_space(pattern)
        taken = {value for value in in_use if isinstance(value, str)}
        room = capacity(space, taken)
        if room.free < count:  # no program can succeed; say so as the kit's own generator would
            raise IdSpaceExhausted(space.pattern, room.size, room.used, requested=count)
        returned: list[str] = []
        for _ in range(count):
            problems = []
            for attempt in range(1, self.attempts + 1):
                answer, problem = self._ask(space.pattern, taken)
                if problem is None:
                    problem = _judge(answer, space, taken, returned)
                if problem is None:
                    returned.append(answer)
                    taken.add(answer)
                    break
                problems.append(f"attempt {attempt}: {problem}")
            else:
                raise ExternalGeneratorError(
                    f"external generator {self.command[0]!r} gave no valid unused ID for "
                    f"pattern {space.pattern!r} in {self.attempts} attempts: " + "; ".join(problems)
                )
        return returned

    def _ask(self, pattern: str, taken: set[str]) -> tuple[str, str | None]:
        """Run the program once; (answer, None) or ("", what went wrong)."""
        if pattern.startswith("-"):  # would be read as an option by the program
            raise ExternalGeneratorError(
                f"pattern {pattern!r} starts with '-'; the external generator is not asked"
            )
        fd, path = tempfile.mkstemp(prefix="autoid-in-use-", suffix=".txt", dir=self.temp_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(f"{value}\n" for value in sorted(taken))
            values = {"pattern": pattern, "exclusion_file": path}
            args = [_PLACEHOLDER.sub(lambda m: values[m[1]], arg) for arg in self.command]
            return _run(args, self.timeout, minimal_environment(self.env_names))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _run(args: list[str], timeout: float, env: dict[str, str]) -> tuple[str, str | None]:
    try:
        proc = subprocess.Popen(
            args,
            env=env,  # an allow-list: no token, key or password reaches the program
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a timeout can end the program and its children
        )
    except OSError as exc:
        raise ExternalGeneratorError(
            f"cannot run external generator {args[0]!r}: {exc.strerror or exc}"
        ) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "", f"no answer within {timeout:g} s"
    if proc.returncode != 0:
        last = (err.strip().splitlines() or [""])[-1][:200]
        return "", f"exit status {proc.returncode}" + (f" ({last})" if last else "")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if len(lines) != 1:
        return "", f"expected one ID on standard output, got {len(lines)} lines"
    return lines[0], None


def _judge(answer: str, space: PatternSpace, taken: set[str], returned: list[str]) -> str | None:
    shown = repr(answer if len(answer) <= 80 else answer[:77] + "...")
    if not space.contains(answer):
        return f"answer {shown} does not fully match the pattern"
    if answer in returned:
        return f"answer {shown} was already returned in this call"
    if answer in taken:
        return f"answer {shown} is already in use"
    return None
