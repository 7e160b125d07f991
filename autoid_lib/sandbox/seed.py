"""Deterministic demo data: what a site's three databases look like after years of the legacy job.

``build_demo(store, now)`` writes, relative to ``now`` (server local time):

* Projects: eight research projects (``DEMO_PROJECTS``) — auto-ID projects with patterns of
  different shapes, one nearly full pattern (``S[0-9]{2}``, 90 of 100 IDs used), two auto-ID
  projects sharing the AE title ``CARDIO``, one project with auto-ID off and one with auto-ID
  on but no AE title.
* Incoming: ``n_studies`` studies (default 300) over the last 20 days, each with 1–6
  ``series`` instances; studies addressed to an auto-ID project and older than a day were
  served by the legacy job (a ``transfers`` instance, most with a ``transfer_date``); the last
  day's studies wait for the kit. Some studies go to unknown AE titles or to the manual
  project (some with a hand-made transfer).
* AutoID: the legacy job's table: numeric ``record_id``, ``autoid_hash`` = SHA-512 hex of the
  raw patient ID, ``autoid_method`` = ``1``; for ``CARDIO`` the first project won.
* Hard cases (``HARD_CASES``): empty patient IDs (one already served under the hash of the
  empty string), trailing spaces in both directions, a new patient with two studies, a
  transfer instance without project name, a patient in two projects, an old study modified
  recently, an old study outside the 14-day window, new patients for the shared AE title and
  for the nearly full pattern.

Everything comes from ``random.Random(DEMO_SEED)``: the same ``n_studies`` gives the same data.
``seed_patient_identifiers()`` lists every patient ID and name the seed contains.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .store import BASE, RecordData, Store

DEMO_SEED = 20240611
DEFAULT_STUDIES = 300
TIME = "%Y-%m-%d %H:%M:%S"
MINUTE = "%Y-%m-%d %H:%M"
#: A record as ``Store.put_records`` takes it: (record name, data, created, modified).
_Row = tuple[str, RecordData, str, str]

_L = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_D = "0123456789"


def _ids(*parts: str | list[str] | tuple[str, ...]) -> Callable[[random.Random], str]:
    """A generator of IDs for a pattern, made of literal strings and character pools."""
    return lambda rng: "".join(rng.choice(p) if isinstance(p, list | tuple) else p for p in parts)


@dataclass(frozen=True)
class DemoProject:
    record_id: str
    name: str
    use_autoid: str
    aetitle: str
    pattern: str
    capacity: int
    make_id: Callable[[random.Random], str] = field(compare=False, repr=False)


DEMO_PROJECTS = (
    DemoProject("1", "KneeHipCohort", "1", "KNEEHIP", r"(KNEE|HIP)_[A-Z]{2}\d", 13520,
                _ids(("KNEE", "HIP"), "_", list(_L), list(_L), list(_D))),
    DemoProject("2", "PediatricBrain", "1", "PEDBRAIN", r"P_0\d{4}", 10000,
                _ids("P_0", *[list(_D)] * 4)),
    DemoProject("3", "ABCTrial", "1", "ABCTRIAL", r"ABC[0-9]{3}", 1000,
                _ids("ABC", *[list(_D)] * 3)),
    DemoProject("4", "SmallPilot", "1", "SPILOT", r"S[0-9]{2}", 100,
                _ids("S", list(_D), list(_D))),
    DemoProject("5", "CardioA", "1", "CARDIO", r"CA[0-9]{4}", 10000,
                _ids("CA", *[list(_D)] * 4)),
    DemoProject("6", "CardioB", "1", "CARDIO", r"CB[0-9]{4}", 10000,
                _ids("CB", *[list(_D)] * 4)),
    DemoProject("7", "ManualNaming", "0", "MANUAL", r"MN\d{3}", 1000,
                _ids("MN", *[list(_D)] * 3)),
    DemoProject("8", "MissingAETitle", "1", "", r"NA\d{3}", 1000,
                _ids("NA", *[list(_D)] * 3)),
)  # fmt: skip
SMALL_PILOT_USED = 90
UNKNOWN_AETITLES = ("OLDPROJ", "RESEARCH7", "FIONA_TEST")
# addressed AE title -> weight among the random studies
_AE_WEIGHTS = {"KNEEHIP": 22, "PEDBRAIN": 20, "ABCTRIAL": 15, "SPILOT": 8, "CARDIO": 8,
               "MANUAL": 10, "OLDPROJ": 4, "RESEARCH7": 4, "FIONA_TEST": 4}  # fmt: skip
# DICOM-ish names; deliberately fictional
_FAMILY = ("NORDMANN", "HANSEN", "JOHANSEN", "OLSEN", "LARSEN", "ANDERSEN", "PEDERSEN",
           "NILSEN", "KRISTIANSEN", "JENSEN", "KARLSEN", "JOHNSEN", "PETTERSEN", "ERIKSEN",
           "BERG", "HAUGEN", "HAGEN", "JOHANNESSEN", "ANDREASSEN", "JACOBSEN")  # fmt: skip
_GIVEN = ("OLA", "KARI", "JAN", "ANNE", "PER", "INGER", "BJORN", "LIV", "KNUT", "BERIT",
          "ARNE", "MARIT", "SVEIN", "ASTRID", "LARS", "RANDI", "NILS", "SOLVEIG", "TOR",
          "EVA")  # fmt: skip
_SERIES = ("t1_mprage_sag", "t2_tse_tra", "flair_3d", "dwi_b1000", "localizer", "swi_tra",
           "pd_fs_cor", "bold_rest", "dti_64dir", "t1_vibe_fs")  # fmt: skip
_STUDY_DESC = ("MR KNE", "MR HOFTE", "MR CAPUT", "CT THORAX", "MR HJERTE", "MR COLUMNA")

# label, addressed AE title, patient key, age in days, served by the legacy job, modified age
HARD_CASES = (
    ("empty patient ID, served by legacy (hash of '')", "PEDBRAIN", "", 5.0, True, None),
    ("empty patient ID", "PEDBRAIN", "", 0.20, False, None),
    ("empty patient ID", "PEDBRAIN", "", 0.30, False, None),
    ("trailing spaces: legacy hashed the stripped ID", "ABCTRIAL", "A", 10.0, True, None),
    ("trailing spaces: new study has 'ID  '", "ABCTRIAL", "A  ", 0.10, False, None),
    ("trailing spaces: legacy hashed 'ID '", "KNEEHIP", "B ", 8.0, True, None),
    ("trailing spaces: new study has the stripped ID", "KNEEHIP", "B", 0.15, False, None),
    ("new patient, first of two studies in one run", "KNEEHIP", "C", 0.30, False, None),
    ("new patient, second of two studies in one run", "KNEEHIP", "C", 0.25, False, None),
    ("transfers instance without project name", "KNEEHIP", "D", 0.40, False, None),
    ("patient in two projects (1)", "KNEEHIP", "E", 6.0, True, None),
    ("patient in two projects (2)", "ABCTRIAL", "E", 4.0, True, None),
    ("patient in two projects (3), new study", "ABCTRIAL", "E", 0.10, False, None),
    ("old study modified recently", "PEDBRAIN", "F", 17.0, False, 0.5),
    ("old study outside the window", "PEDBRAIN", "G", 18.0, False, None),
    ("unknown AE title", "NOSUCHAE", "H", 0.5, False, None),
    ("shared AE title, new patient", "CARDIO", "I", 0.2, False, None),
    ("nearly full pattern, new patient", "SPILOT", "J", 0.1, False, None),
    ("nearly full pattern, new patient", "SPILOT", "K", 0.2, False, None),
    ("nearly full pattern, new patient", "SPILOT", "L", 0.3, False, None),
)


@dataclass
class _Patient:
    pid: str
    name: str


@dataclass
class _Study:
    uid: str
    patient: _Patient
    aetitle: str
    created: datetime
    served: bool
    modified: datetime | None = None
    label: str = ""


@dataclass
class SeedSummary:
    """What a seed wrote: counts for reports and docs, identifiers for privacy tests."""

    studies: int = 0
    patients: int = 0
    series: int = 0
    served_studies: int = 0
    autoid_rows: int = 0
    hard_cases: tuple[str, ...] = ()
    patient_ids: frozenset[str] = frozenset()
    patient_names: frozenset[str] = frozenset()


def sha512_hex(value: str) -> str:
    return hashlib.sha512(value.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4)
def seed_patient_identifiers(n_studies: int = DEFAULT_STUDIES) -> frozenset[str]:
    """Every patient ID (raw and stripped) and patient name in the demo seed, blanks left out."""
    summary = build_demo(Store(None), datetime(2024, 1, 1), n_studies=n_studies)
    return summary.patient_ids | summary.patient_names


def build_demo(store: Store, now: datetime, n_studies: int = DEFAULT_STUDIES) -> SeedSummary:
    """Write the demo seed into ``store``; times are relative to ``now``."""
    rng = random.Random(DEMO_SEED)
    patients = _make_patients(rng, n_studies)
    studies = _random_studies(rng, patients, now, n_studies)
    studies += _hard_studies(rng, patients, now)
    studies.sort(key=lambda s: s.created)
    _cap_small_pilot(studies)

    incoming: list[_Row] = []
    autoid: list[_Row] = []
    ids: dict[str, dict[str, str]] = {p.name: {} for p in DEMO_PROJECTS}  # project -> hash -> ID
    served_project: dict[str, DemoProject] = {}
    for p in DEMO_PROJECTS:
        if p.use_autoid == "1" and p.aetitle and p.aetitle not in served_project:
            served_project[p.aetitle] = p  # the legacy job: first one wins
    filler = _small_pilot_filler(rng, studies, now, ids, autoid)
    n_series = 0
    for study in studies:
        data: RecordData = {BASE: _study_values(rng, study)}
        for number in range(1, rng.randint(1, 6) + 1):
            data[("series", number)] = _series_values(rng, study)
            n_series += 1
        modified = study.modified or study.created
        project = served_project.get(study.aetitle)
        if study.served and project is not None:
            key = sha512_hex(study.patient.pid)
            value = ids[project.name].get(key)
            when = study.created + timedelta(minutes=rng.randint(1, 3))
            if value is None:
                value = _unused(rng, project, ids[project.name])
                ids[project.name][key] = value
                autoid.append(_autoid_row(project, key, value, when))
            data[("transfers", 1)] = _transfer(rng, project.name, value, when, now)
            modified = min(now, when + timedelta(minutes=30))
        elif study.aetitle == "MANUAL" and rng.random() < 0.5:
            when = study.created + timedelta(hours=rng.randint(1, 20))
            if when < now:
                manual = f"MN{rng.randrange(1000):03d}"
                data[("transfers", 1)] = _transfer(rng, "ManualNaming", manual, when, now)
                modified = when
        elif study.label == "transfers instance without project name":
            data[("transfers", 1)] = {"transfer_event_name": "baseline", "transfers_complete": "0"}
        incoming.append((study.uid, data, study.created.strftime(TIME), modified.strftime(TIME)))

    autoid.sort(key=lambda row: row[2])
    autoid = [(str(number), *row[1:]) for number, row in enumerate(autoid, start=1)]
    store.put_records("projects", _project_records(now))
    store.put_records("incoming", incoming)
    store.put_records("autoid", autoid)
    all_patients = [s.patient for s in studies] + filler
    return SeedSummary(
        studies=len(studies),
        patients=len({s.patient.pid for s in studies}),
        series=n_series,
        served_studies=sum(1 for s in studies if s.served),
        autoid_rows=len(autoid),
        hard_cases=tuple(label for label, *_ in HARD_CASES),
        patient_ids=frozenset(v for p in all_patients for v in (p.pid, p.pid.strip()) if v.strip()),
        patient_names=frozenset(p.name for p in all_patients if p.name.strip()),
    )


def _make_patients(rng: random.Random, n_studies: int) -> list[_Patient]:
    count = max(12, (n_studies * 2) // 5)
    pids: set[str] = set()
    while len(pids) < count:
        pids.add(
            f"{rng.randint(1, 28):02d}{rng.randint(1, 12):02d}{rng.randint(0, 99):02d}"
            f"{rng.randrange(100000):05d}"
        )
    return [_Patient(pid, f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}") for pid in sorted(pids)]


def _random_studies(rng, patients, now, n_studies) -> list[_Study]:
    studies: list[_Study] = []
    aetitles, weights = zip(*_AE_WEIGHTS.items(), strict=True)
    auto = {p.aetitle for p in DEMO_PROJECTS if p.use_autoid == "1" and p.aetitle}
    n_random = max(0, n_studies - len(HARD_CASES))
    while len(studies) < n_random:
        for patient in patients:
            home = rng.choices(aetitles, weights)[0]
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
                if len(studies) >= n_random:
                    break
                aetitle = home if rng.random() > 0.05 else rng.choices(aetitles, weights)[0]
                created = now - timedelta(seconds=rng.randint(600, 20 * 86400))
                served = aetitle in auto and now - created > timedelta(days=1)
                studies.append(_Study(_uid(rng), patient, aetitle, created, served))
            if len(studies) >= n_random:
                break
    return studies


def _hard_studies(rng, patients, now) -> list[_Study]:
    base = {}
    out = []
    for label, aetitle, key, age, served, modified_age in HARD_CASES:
        stripped = key.strip()
        if stripped not in base:
            pid = "" if not stripped else f"{rng.randint(1, 28):02d}0190{rng.randrange(10**5):05d}"
            name = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}" if stripped else ""
            base[stripped] = (pid, name)
        pid, name = base[stripped]
        patient = _Patient(pid + key[len(stripped) :], name)
        modified = now - timedelta(days=modified_age) if modified_age else None
        created = now - timedelta(days=age)
        out.append(_Study(_uid(rng), patient, aetitle, created, served, modified, label))
    return out


def _cap_small_pilot(studies: list[_Study]) -> None:
    """Keep the legacy job from serving more than SMALL_PILOT_USED patients of SmallPilot."""
    seen: set[str] = set()
    for study in studies:
        if study.aetitle == "SPILOT" and study.served:
            if study.patient.pid not in seen and len(seen) >= SMALL_PILOT_USED - 5:
                study.served = False
            else:
                seen.add(study.patient.pid)


def _small_pilot_filler(
    rng: random.Random,
    studies: list[_Study],
    now: datetime,
    ids: dict[str, dict[str, str]],
    autoid: list[_Row],
) -> list[_Patient]:
    """Patients served long ago, so that SmallPilot has SMALL_PILOT_USED IDs in use."""
    served = {s.patient.pid for s in studies if s.aetitle == "SPILOT" and s.served}
    project = next(p for p in DEMO_PROJECTS if p.aetitle == "SPILOT")
    filler = []
    for number in range(SMALL_PILOT_USED - len(served)):
        patient = _Patient(f"3112{number:02d}{rng.randrange(10**5):05d}", "")
        key = sha512_hex(patient.pid)
        value = _unused(rng, project, ids[project.name])
        ids[project.name][key] = value
        when = now - timedelta(days=rng.randint(60, 700), minutes=number)
        autoid.append(_autoid_row(project, key, value, when))
        filler.append(patient)
    return filler


def _unused(rng: random.Random, project: DemoProject, used: dict[str, str]) -> str:
    taken = set(used.values())
    while True:
        value = project.make_id(rng)
        if value not in taken:
            return value


def _uid(rng: random.Random) -> str:
    return f"1.2.826.0.1.3680043.10.543.{rng.randrange(10**6)}.{rng.randrange(10**12)}"


def _study_values(rng, study: _Study) -> dict[str, str]:
    day = study.created - timedelta(days=rng.choice((0, 0, 0, 1, 2)))
    return {
        "study_institution_name": rng.choice(("Sandbox University Hospital", "Demo Clinic")),
        "study_aetitle_sender": rng.choice(("MR1_PRISMA", "MR2_SKYRA", "CT1_FORCE")),
        "study_aetitle_addressed": study.aetitle,
        "study_patient_name": study.patient.name,
        "study_patient_id": study.patient.pid,
        "study_description": rng.choice(_STUDY_DESC),
        "study_date": day.strftime("%Y%m%d"),
        "study_time": day.strftime("%H%M%S"),
        "study_accession_number": f"NSB{rng.randrange(10**8):08d}",
        "incoming_studies_complete": "2",
    }


def _series_values(rng, study: _Study) -> dict[str, str]:
    name = rng.choice(_SERIES)
    return {
        "series_instance_uid": _uid(rng),
        "series_description": name,
        "series_date": study.created.strftime("%Y%m%d"),
        "series_time": study.created.strftime("%H%M%S"),
        "series_num_files": str(rng.randint(1, 400)),
        "series_sequence_name": name.split("_")[0],
        "series_classify_types": rng.choice(("T1", "T2", "DWI", "localizer", "")),
        "series_complete": "2",
    }


def _transfer(rng, project_name: str, value: str, when: datetime, now: datetime) -> dict:
    values = {
        "transfer_requested_date": when.strftime(MINUTE),
        "transfer_project_name": project_name,
        "transfer_name": value,
        "transfer_event_name": "",
        "transfers_complete": "0",
    }
    done = when + timedelta(minutes=rng.randint(5, 15))
    if done < now:
        values |= {
            "transfer_date": done.strftime(MINUTE),
            "transfer_mapped_uid": _uid(rng),
            "transfer_error___1": "0",
            "transfer_error___2": "0",
            "transfer_error___3": "1" if rng.random() < 0.1 else "0",
            "transfers_complete": "2",
        }
    return values


def _autoid_row(project: DemoProject, key: str, value: str, when: datetime) -> _Row:
    """(record name, data, created, modified); numbered once all rows are in time order."""
    data = {
        "autoid_project_name": project.name,
        "autoid_hash": key,
        "autoid_value": value,
        "autoid_method": "1",
        "autoid_complete": "0",
    }
    return ("", {BASE: data}, when.strftime(TIME), when.strftime(TIME))


def _project_records(now: datetime):
    created = (now - timedelta(days=400)).strftime(TIME)
    for p in DEMO_PROJECTS:
        data = {
            "leave_alone_notes": f"Demo project {p.name}",
            "leave_alone_do_not_touch_complete": "2",
            "project_name": p.name,
            "project_type": "0",
            "project_contact": "Demo Owner",
            "project_contact_email": "owner@example.org",
            "project_patient_naming": p.pattern,
            "project_rec_number": f"2023/{1000 + int(p.record_id)}",
            "project_active": "1",
            "project_use_autoid": p.use_autoid,
            "project_autoid_aetitle": p.aetitle,
            "projects_complete": "2",
        }
        yield p.record_id, {BASE: data}, created, created
