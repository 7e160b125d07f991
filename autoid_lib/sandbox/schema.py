"""The three REDCap databases the kit talks to, written as data.

The sandbox must not read the data dictionaries at run time, so their content is copied here
from the site's CSV exports (field name, instrument, type, label, choices, validation). Every
other sandbox module derives its behaviour from these schemas: which fields exist, which
instruments repeat, how a checkbox expands into ``field___code`` columns, what ``metadata``
exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPEAT_INSTRUMENT = "redcap_repeat_instrument"
REPEAT_INSTANCE = "redcap_repeat_instance"
COMPLETE_CHOICES = (("0", "Incomplete"), ("1", "Unverified"), ("2", "Complete"))
YESNO_CHOICES = (("1", "Yes"), ("0", "No"))

# Field types that hold no data (never exported) or cannot be set through the record API.
NON_DATA_TYPES = frozenset({"descriptive"})
NON_IMPORTABLE_TYPES = frozenset({"descriptive", "file"})


@dataclass(frozen=True)
class Field:
    """One row of a data dictionary."""

    name: str
    form: str
    type: str
    label: str
    choices: tuple[tuple[str, str], ...] = ()
    validation: str = ""
    validation_min: str = ""
    identifier: bool = False
    note: str = ""
    annotation: str = ""
    branching: str = ""
    section_header: str = ""
    alignment: str = ""

    def choice_codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.choices)

    def export_names(self) -> tuple[str, ...]:
        """Column names in a flat export: checkboxes expand to ``name___code``."""
        if self.type in NON_DATA_TYPES:
            return ()
        if self.type == "checkbox":
            return tuple(f"{self.name}___{code}" for code in self.choice_codes())
        return (self.name,)

    def metadata_row(self) -> dict[str, str]:
        """The field as REDCap's ``content=metadata`` JSON export shows it."""
        return {
            "field_name": self.name,
            "form_name": self.form,
            "section_header": self.section_header,
            "field_type": self.type,
            "field_label": self.label,
            "select_choices_or_calculations": " | ".join(f"{c}, {lbl}" for c, lbl in self.choices),
            "field_note": self.note,
            "text_validation_type_or_show_slider_number": self.validation,
            "text_validation_min": self.validation_min,
            "text_validation_max": "",
            "identifier": "y" if self.identifier else "",
            "branching_logic": self.branching,
            "required_field": "",
            "custom_alignment": self.alignment,
            "question_number": "",
            "matrix_group_name": "",
            "matrix_ranking": "",
            "field_annotation": self.annotation,
        }


@dataclass(frozen=True)
class Schema:
    """A REDCap project (the kit calls it a database): its fields and repeating instruments."""

    name: str
    title: str
    project_id: int
    fields: tuple[Field, ...]
    repeating: tuple[str, ...] = ()
    autonumbering: bool = False
    _by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)
    _columns: dict[str, tuple[str, Field | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_name.update({f.name: f for f in self.fields})
        for form in self.forms:
            for f in self.form_fields(form):
                for col in f.export_names():
                    self._columns[col] = (form, f)
            self._columns[f"{form}_complete"] = (form, None)

    @property
    def record_id(self) -> str:
        return self.fields[0].name

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.form for f in self.fields))

    def spec(self, name: str) -> Field | None:
        return self._by_name.get(name)

    def form_fields(self, form: str) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.form == form)

    def is_repeating(self, form: str) -> bool:
        return form in self.repeating

    def columns(self) -> dict[str, tuple[str, Field | None]]:
        """Every data column, in export order -> (its form, its field; None for ``_complete``)."""
        return self._columns


def _f(name, form, type_, label, choices="", **extra) -> Field:
    parsed = tuple(
        (code.strip(), lbl.strip())
        for code, lbl in (part.split(",", 1) for part in choices.split("|") if part.strip())
    )
    if type_ == "yesno":
        parsed = YESNO_CHOICES
    return Field(name, form, type_, label, parsed, **extra)


_USE_AUTOID_LABEL = (
    "If auto-ID is enabled new participants will receive an automatically generated id based "
    "on the project_patient_naming regular expression (make sure that entry makes sense). This "
    "is essentially a full anonymization step as the original PatientID will not be stored in "
    "the autoid project - only a hash values derived from it.\n\nBe sure you want this as you "
    "give up the right to name participants on your own."
)
_TRANSFER_INFO = (
    "A transfer is initiated if both transfer_date and transfer_project_name are filled in. "
    "Every 5 to 10 minutes the background FIONA process will attempt to anonymize and send the "
    "marked studies. If the transfer was successful a transfer_date entry will be entered by the "
    "system. Otherwise, please check the error message provided and contact your system admin."
)

_LA = "leave_alone_do_not_touch"
PROJECTS = Schema(
    name="projects",
    title="Data Transfer Projects",
    project_id=41,
    autonumbering=True,
    fields=(
        _f("record_id", _LA, "text", "Record ID"),
        _f("leave_alone_notes", _LA, "notes", "Information about this project"),
        _f(
            "leave_alone_current_rek", _LA, "file", "Current REK approval document for this project"
        ),
        _f(
            "leave_alone_mrn",
            _LA,
            "text",
            "Test field, can be deleted again!",
            validation="mrn_11d",
            identifier=True,
        ),
        _f("project_name", "projects", "text", "Project Name (use the same name on FIONA)"),
        _f(
            "project_type",
            "projects",
            "dropdown",
            "The research information system type of this project",
            "0, with REK | 1, no REK with non-human subjects | 2, no REK quality control or "
            "operational support | 3, publicly available dataset (requires data use agreement)",
        ),
        _f("project_contact", "projects", "text", "Contact information for the project owner"),
        _f(
            "project_contact_email",
            "projects",
            "text",
            "Contact information for the project owner (email)",
        ),
        _f("project_patient_naming", "projects", "text", "Rule to name patients in this project"),
        _f("project_rec_number", "projects", "text", "Current REK number for this project"),
        _f(
            "project_rec_start_date",
            "projects",
            "text",
            "REK approval start date",
            validation="date_ymd",
        ),
        _f(
            "project_rec_end_date",
            "projects",
            "text",
            "REK approval end date",
            validation="date_ymd",
        ),
        _f(
            "project_end_type",
            "projects",
            "dropdown",
            "What should happen with this projects data at the end of the study?",
            "1, Full anonymization of the data with continued use | 2, Delete data",
        ),
        _f(
            "project_token",
            "projects",
            "text",
            "System components with access to this project should use this token to send "
            "messages to REDCap",
        ),
        _f(
            "project_active",
            "projects",
            "yesno",
            "Is the project an active imaging project?",
            alignment="RH",
        ),
        _f(
            "project_import_rule_1_tag",
            "projects",
            "text",
            "The tag for the first rule (used during import to filter values based on regular "
            "expressions).",
            annotation="0032,4000",
        ),
        _f(
            "project_import_rule_1_regexp",
            "projects",
            "text",
            "A regular expression that filters the tag. All named entities will be retained in "
            "import to IDS7.",
        ),
        _f("project_use_autoid", "projects", "yesno", _USE_AUTOID_LABEL, alignment="RH"),
        _f(
            "project_autoid_aetitle",
            "projects",
            "text",
            "The addressed AETitle for auto-id. This is our only way to recognize that incoming "
            "data belongs to a specific project. This value has to be set if the auto-id feature "
            "is used.",
            branching="[project_use_autoid] = '1'",
        ),
        _f(
            "rewrite_ex_tag",
            "rewritepixelexclusions",
            "dropdown",
            "The DICOM tag that should be used in the exclusion. Image series that match will "
            "not undergo a RewriteDICOM during forwarding to research PACS.",
            "1, 0x0020:0x4000 Image Comments | 2, 0x0008:0x103E Series Description",
        ),
        _f(
            "rewrite_ex_reg",
            "rewritepixelexclusions",
            "text",
            "Regular expression that should match.",
        ),
    ),
)

_IS = "incoming_studies"
_RO = " @READONLY"
_AUTO = "automatically filled in"
INCOMING = Schema(
    name="incoming",
    title="Incoming",
    project_id=42,
    repeating=("series", "transfers"),
    fields=(
        _f("study_instance_uid", _IS, "text", "Study Instance UID"),
        _f("study_institution_name", _IS, "text", "Institution name in the incoming DICOM"),
        _f("study_aetitle_sender", _IS, "text", "AETitle of the sending DICOM node"),
        _f("study_aetitle_addressed", _IS, "text", "AETitle the sending node addressed on FIONA"),
        _f("study_patient_name", _IS, "text", "Patient name"),
        _f("study_patient_id", _IS, "text", "Patient ID"),
        _f("study_description", _IS, "text", "Study Description"),
        _f("study_date", _IS, "text", "Study Date"),
        _f("study_time", _IS, "text", "Study Time"),
        _f("study_accession_number", _IS, "text", "Accession number of the incoming study"),
        _f("series_instance_uid", "series", "text", "Series Instance UID"),
        _f("series_description", "series", "text", "Series Description"),
        _f("series_date", "series", "text", "Series Date"),
        _f("series_time", "series", "text", "Series Time"),
        _f(
            "series_num_files",
            "series",
            "text",
            "Number of files for this series",
            validation="integer",
            validation_min="0",
        ),
        _f("series_sequence_name", "series", "text", "Sequence name of the series"),
        _f(
            "series_classify_types",
            "series",
            "text",
            "List of classified/detected image types for this series",
        ),
        _f("transfer_info_text", "transfers", "descriptive", _TRANSFER_INFO),
        _f(
            "transfer_requested_date",
            "transfers",
            "text",
            "The date on which the data transfer was requested",
            validation="datetime_ymd",
        ),
        _f(
            "transfer_project_name",
            "transfers",
            "text",
            "Project name to which the data should be transferred",
        ),
        _f(
            "transfer_name",
            "transfers",
            "text",
            "Anonymized patient name in target project",
            note="The anonymization process will use this for PatientID and PatientName",
        ),
        _f(
            "transfer_event_name",
            "transfers",
            "text",
            "The name of the event assigned to this dataset.",
        ),
        _f(
            "transfer_date",
            "transfers",
            "text",
            "Date of the transfer",
            section_header=" The following fields are filled out by FIONA.",
            note=_AUTO,
            validation="datetime_ymd",
            annotation=_RO,
        ),
        _f(
            "transfer_error",
            "transfers",
            "checkbox",
            "Transfer errors (last transfer)",
            "1, Anonymization error | 2, Send error to rDMA | 3, Performed pixel anonymization",
            note=_AUTO,
            annotation=_RO,
        ),
        _f(
            "transfer_mapped_uid",
            "transfers",
            "text",
            "StudyInstanceUID in the anonymized DICOM files",
            annotation=_RO,
        ),
        _f(
            "transfer_error_message",
            "transfers",
            "notes",
            "Message generated from last error (anonymize or send error)",
            annotation=_RO,
        ),
    ),
)

AUTOID = Schema(
    name="autoid",
    title="AutoID",
    project_id=43,
    autonumbering=True,
    fields=(
        _f("record_id", "autoid", "text", "Record ID"),
        _f("autoid_project_name", "autoid", "text", "Project name for this auto-id"),
        _f("autoid_hash", "autoid", "text", "The hash of the key value", identifier=True),
        _f(
            "autoid_value",
            "autoid",
            "text",
            "The ID linked to this key: [autoid_hash]",
            identifier=True,
        ),
        _f(
            "autoid_method",
            "autoid",
            "dropdown",
            "The method used to generate this key.",
            "1, Random ID based on project ID pattern",
        ),
    ),
)

SCHEMAS: dict[str, Schema] = {s.name: s for s in (PROJECTS, INCOMING, AUTOID)}
DATABASES: tuple[str, ...] = tuple(SCHEMAS)
