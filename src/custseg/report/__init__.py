"""The report: one self-contained HTML page that explains a segmentation run.

:func:`build_report` reads only a run folder written by ``custseg segment --out RUN_DIR``
and writes ``RUN_DIR/report.html``: plotly charts (plotly.js embedded once, so the page
works offline), each section led by one sentence computed from the numbers, a table of
contents, and a card per segment.

>>> from custseg.report import build_report
>>> build_report("segments")  # doctest: +SKIP
PosixPath('segments/report.html')
"""

from custseg.report._build import MapAhead, build_report
from custseg.report._run import OPTIONAL_FILES, REQUIRED_FILES

__all__ = ["OPTIONAL_FILES", "REQUIRED_FILES", "MapAhead", "build_report"]
