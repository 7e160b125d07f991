"""Who is who in one project: its AutoID rows indexed both ways, the names existing transfer
requests sent its patients under, and each patient's name decided from both (a stored ID, a name
adopted from a request, a new patient, or a conflict that skips the patient)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autoid_lib.hashing import normalise_hash
from autoid_lib.ids.space import PatternSpace
from autoid_lib.plan.existing import SentNames
from autoid_lib.plan.model import AUTOID_CONFLICT, AUTOID_NAME_VARIANT
from autoid_lib.snapshot import AutoIdRow

Report = Callable[[str, str, str, int], None]
"""Where anomalies go: ``(kind, message, action, count)``, the project planner's ``_anomaly``."""


@dataclass(frozen=True)
class Decision:
    """What one patient's pending studies get: a known name, a new ID, or a skip reason."""

    value: str = ""
    source: str = ""  # "reused" | "adopted" (a name sent before, recorded in AutoID now)
    skip: str = ""


class ProjectIds:
    """One project's names: which patient holds which ID, and which values nobody may get.

    ``in_use`` is every value no new patient may be given (stored, sent, reserved, retired);
    ``used_in_pattern`` counts those that take room in the pattern's space.
    """

    def __init__(
        self,
        name: str,
        pattern: PatternSpace | None,
        rows: Iterable[AutoIdRow],
        sent: SentNames,
        report: Report,
        *,
        retired: frozenset[str] = frozenset(),
    ):
        self.name = name
        self.pattern = pattern
        self.sent = sent
        self.retired = retired  # values retired in this project: never handed out again
        self._anomaly = report
        self.problems: Counter[str] = Counter()  # patients skipped, by what was found
        self._index_rows(rows)
        for pseudonym in sent.patients_of:
            self.reserve(pseudonym)  # sent to the PACS under this name, whatever AutoID says
        for value in retired:
            self.reserve(value)  # retired by autoid repair: reserved for ever

    def _index_rows(self, rows: Iterable[AutoIdRow]) -> None:
        """Index the project's AutoID rows both ways; conflicts are kept aside, not merged.

        Rows under a variant spelling of the project's name (a renamed project?) are nobody's
        to hand out or to look up: their values stay reserved and their patients are skipped.
        Plain dicts, with sets only for the rare conflicts: a million rows index in a second.
        """
        self.value_of: dict[str, str] = {}  # hash -> value (the first one seen)
        self.hash_of: dict[str, str] = {}  # value -> hash (the first one seen)
        self.split: dict[str, set[str]] = {}  # hash -> its several values
        self.shared: dict[str, set[str]] = {}  # value -> its several hashes
        self.reserved: set[str] = set()  # values in use without a complete row of this project
        self.variant_hashes: set[str] = set()
        variants: Counter[str] = Counter()
        incomplete = 0
        for row in rows:
            hash_, value = normalise_hash(row.hash), row.value.strip()
            if row.project_name.strip() != self.name:
                variants[row.project_name.strip()] += 1
                self.variant_hashes.add(hash_)
                if value:
                    self.reserved.add(value)
                continue
            if not hash_ or not value:
                incomplete += 1
                if value:
                    self.reserved.add(value)  # nobody else may get it, whoever it belongs to
                continue
            first_value = self.value_of.setdefault(hash_, value)
            if first_value != value:
                self.split.setdefault(hash_, {first_value}).add(value)
            first_hash = self.hash_of.setdefault(value, hash_)
            if first_hash != hash_:
                self.shared.setdefault(value, {first_hash}).add(hash_)
        self.variant_hashes.discard("")
        self.in_use: set[str] = set(self.hash_of) | self.reserved
        self.used_in_pattern = 0
        if self.pattern is not None:
            self.used_in_pattern = sum(map(self.pattern.contains, self.in_use))
        self._report_row_problems(incomplete, variants)

    def _report_row_problems(self, incomplete: int, variants: Counter[str]) -> None:
        if incomplete:
            self._anomaly(
                "autoid_incomplete_rows",
                f"{incomplete} AutoID row(s) lack a hash or a value and are ignored",
                "Complete or delete these rows in the AutoID database.",
                incomplete,
            )
        if variants:
            spellings = ", ".join(sorted(variants))
            count = sum(variants.values())
            self._anomaly(
                "autoid_name_variant",
                f"{count} AutoID row(s) are stored under project name {spellings}, which "
                f"differs from {self.name} only in case or spacing (a renamed project?); their "
                "IDs are never handed out again and their patients' studies are skipped",
                f"If it is this project renamed, set autoid_project_name to {self.name} on "
                "those AutoID rows; if it is another project, rename one of the two.",
                count,
            )
        if self.split:
            self._anomaly(
                "autoid_conflict_hash",
                f"{len(self.split)} patient hash(es) have several IDs",
                "Decide which ID each patient keeps and delete the other AutoID rows; "
                "their studies are skipped until then.",
                len(self.split),
            )
        if self.shared:
            self._anomaly(
                "autoid_conflict_value",
                f"{len(self.shared)} ID(s) are stored for several patient hashes",
                "Two patients may share an ID: check these AutoID rows before more data "
                "arrives; their studies are skipped until then.",
                len(self.shared),
            )
        foreign = len(self.in_use) - self.used_in_pattern
        if self.pattern is not None and foreign:
            self._anomaly(
                "autoid_pattern_mismatch",
                f"{foreign} stored ID(s) do not match the current pattern "
                "(the pattern was changed?); they are kept for their patients",
                "Nothing to do if the pattern was changed on purpose.",
                foreign,
            )

    def reserve(self, value: str) -> None:
        """Count ``value`` as used (a transfer name, a new ID) so no other patient gets it."""
        if value and value not in self.in_use:
            self.in_use.add(value)
            if self.pattern is not None and self.pattern.contains(value):
                self.used_in_pattern += 1

    def _known_id(self, lookup_keys: tuple[str, ...]) -> tuple[str, bool]:
        """The patient's stored ID ('' if new) and whether the rows conflict."""
        values = set()
        for key in lookup_keys:
            if key in self.value_of:
                values |= self.split.get(key, {self.value_of[key]})
        if not values:
            return "", False
        if len(values) > 1:
            return "", True
        (value,) = values
        if not self.shared.get(value, {self.hash_of[value]}) <= set(lookup_keys):
            return "", True  # the same ID is stored for another patient too
        return value, False

    def _owned_by_another(self, name: str, patient: str, keys: tuple[str, ...]) -> bool:
        """Whether AutoID or an existing request gives ``name`` to someone else."""
        if self.sent.patients_of.get(name, {patient}) - {patient}:
            return True
        if name in self.reserved:
            return True  # an incomplete or variant row holds it for somebody unknown
        if name in self.retired and name not in self.hash_of:
            return True  # retired and no live row gives it to anybody: nobody goes under it
        stored = self.shared.get(name) or ({self.hash_of[name]} if name in self.hash_of else set())
        return not stored <= set(keys)

    def decide(self, patient: str, keys: tuple[str, ...]) -> Decision:
        """One patient's name in this project, from AutoID and the requests already sent."""
        value, conflict = self._known_id(keys)
        if conflict:
            return Decision(skip=AUTOID_CONFLICT)
        if self.variant_hashes.intersection(keys):
            return Decision(skip=AUTOID_NAME_VARIANT)
        sent = self.sent.names_of.get(patient, set())
        if any(self._owned_by_another(n, patient, keys) for n in sent | {value} - {""}):
            self.problems["a name this patient was sent under belongs to another patient"] += 1
            return Decision(skip=AUTOID_CONFLICT)
        if value:
            if sent - {value}:
                self.problems["was sent under another name than its AutoID row (served)"] += 1
            return Decision(value, "reused")
        if len(sent) > 1:
            self.problems["was sent under several names and has no AutoID row"] += 1
            return Decision(skip=AUTOID_CONFLICT)
        if sent:
            return Decision(next(iter(sent)), "adopted")
        return Decision()
