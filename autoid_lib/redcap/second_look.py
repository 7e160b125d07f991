"""The second line of defence: before the transfers, are this run's patients still its own?

The lease keeps two writers (runs, ``repair --apply``) from writing at once; this check catches
what it cannot (a writer
without the lease: an older kit, a hand edit, a lease setting switched off). Just before the
transfer import, the run re-reads the AutoID table and compares, for every (project, pseudonym)
it is about to send, the patients (hashes) REDCap now holds with the ones the run expects: those
it read plus those it wrote. Any difference means another writer was at work; the run writes
nothing more and fails, before a study is forwarded under a second pseudonym.

Pure: rows in, sentences out (no patient data: projects and pseudonyms only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from autoid_lib.hashing import normalise_hash
from autoid_lib.plan import NewAutoId, TransferRequest
from autoid_lib.snapshot import AutoIdRow


def foreign_rows(
    new_ids: Iterable[NewAutoId],
    transfers: Iterable[TransferRequest],
    read: Iterable[AutoIdRow],
    now: Iterable[AutoIdRow],
) -> list[str]:
    """Problems with the AutoID rows of the patients about to be sent (``transfers``),
    comparing the rows the writer ``read`` (plus ``new_ids``, what it wrote) with the rows
    REDCap holds ``now``. A run passes its plan's; ``repair`` its new rows and the requests it
    sends again, with the rows it retired left out of ``read``."""
    _, expected = id_index(read)
    for new in new_ids:
        expected[(new.project_name, new.value)].add(new.hash)
    values_of, actual = id_index(now)
    problems = []
    for key in sorted({(t.project_name, t.pseudonym) for t in transfers}):
        project, value = key
        want, have = expected.get(key, set()), actual.get(key, set())
        if not want:
            continue  # sent under a name AutoID never held (a legacy transfer): nothing to compare
        if have != want:
            problems.append(
                f"{project}: ID {value} is now stored for {len(have)} patient(s), "
                f"the run expected {len(want)}"
            )
        elif any(values_of[(project, h)] != {value} for h in want):
            problems.append(f"{project}: the patient of ID {value} now has a second ID")
    return problems


Pairs = dict[tuple[str, str], set[str]]


def id_index(rows: Iterable[AutoIdRow]) -> tuple[Pairs, Pairs]:
    """AutoID both ways, as the plan compares it: (project, hash) -> values and
    (project, value) -> hashes. A row without a hash or a value is nobody's ID (the plan
    reports it); hex ignores case. Verification reads its rows through this too."""
    values_of: Pairs = defaultdict(set)
    hashes_of: Pairs = defaultdict(set)
    for row in rows:
        hash_, value = normalise_hash(row.hash), row.value.strip()
        if hash_ and value:
            values_of[(row.project_name, hash_)].add(value)
            hashes_of[(row.project_name, value)].add(hash_)
    return values_of, hashes_of
