"""The HTML report of a recorded notebook: outputs only, lean template, self-contained.

``export_html(notebook, html_path, title=...)`` turns an executed notebook (``run.ipynb``) into
``report.html`` with nbconvert: no code cells (``exclude_input``), no cells tagged ``hide``,
``parameters`` or ``injected-parameters`` (``TagRemovePreprocessor``; papermill's report mode is
ignored by nbconvert), no heading over nothing (``_drop_empty_sections``), images embedded, the
lean template in ``templates/report/``. A cell that raised is always shown. ``fallback_report``
writes the minimal page used when the export itself fails, so a run folder always has a report.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

from autoid_lib.package_data import templates_dir
from autoid_lib.private_files import write_private

TEMPLATES = templates_dir()
HIDE_TAG = "hide"  # cells (and the papermill-injected parameters) left out of the HTML
REMOVED_TAGS = frozenset({HIDE_TAG, "parameters", "injected-parameters"})
RUN_TITLE = "Auto-ID run report"


def export_html(notebook: Path, html_path: Path, *, title: str = RUN_TITLE, nav: str = "") -> int:
    """Write the report: outputs only, hidden cells removed, lean template; returns its size.

    ``title`` becomes the page's ``<title>``; ``nav`` (trusted HTML: ``records.navigation``) is
    the bar of links above the report.
    """
    import nbformat
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:  # an error must show even in a cell that is normally hidden
        if any(o.get("output_type") == "error" for o in cell.get("outputs", ())):
            tags = cell.metadata.get("tags", [])
            cell.metadata["tags"] = [t for t in tags if t not in REMOVED_TAGS]
    _drop_empty_sections(nb.cells)
    nb.metadata["title"] = title
    nb.metadata["autoid_nav"] = nav
    exporter = _report_exporter_class()(
        template_name="report",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags=set(REMOVED_TAGS), enabled=True), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb)
    data = body.encode("utf-8")
    write_private(html_path, data)
    return len(data)


def _drop_empty_sections(cells: list) -> None:
    """Hide each markdown cell whose code cells (up to the next markdown cell) all show
    nothing: a run that stopped before planning shows none of the plan's sections, and their
    headings and introductions must not stand over empty space (``report.error_box`` says in
    one line why there is nothing to list)."""

    def shows(cell) -> bool:
        removed = REMOVED_TAGS & set(cell.metadata.get("tags", ()))
        return not removed and bool(cell.get("outputs"))

    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        section = []
        for later in cells[i + 1 :]:
            if later.cell_type == "markdown":
                break
            if later.cell_type == "code":
                section.append(later)
        if section and not any(shows(code) for code in section):
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), HIDE_TAG]


def fallback_report(path: Path, failure: Mapping[str, str], *, title: str = RUN_TITLE) -> None:
    """A minimal page naming the failure (``step``, ``type``, ``message``): the export failed."""
    heading = title.removesuffix(" report")
    write_private(
        path,
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title></head><body><h1>{html.escape(heading)}: failed</h1>"
        f"<p>Failed at <b>{html.escape(failure['step'])}</b> ({html.escape(failure['type'])}): "
        f"{html.escape(failure['message'])}</p><p>See run.ipynb in this folder.</p></body></html>",
    )


def _report_exporter_class():
    from nbconvert import HTMLExporter, TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class ReportExporter(HTMLExporter):
        """HTMLExporter without its final BeautifulSoup pass over the whole page.

        That pass only adds alt texts and lab-template tabindex attributes; our charts carry
        their own alt text, and on a 10,000-study report it costs ~5 s of a ~7 s export.
        """

        def from_notebook_node(self, nb, resources=None, **kw):
            self.register_filter("highlight_code", Highlight2HTML(parent=self))
            self.register_filter(
                "filter_data_type",
                WidgetsDataTypeFilter(notebook_metadata=nb.metadata, parent=self),
            )
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    return ReportExporter
