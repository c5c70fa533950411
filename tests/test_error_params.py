"""Library errors name library parameters; the CLI spells them as its flags.

A message says ``{param}`` (the error's own parameter) or ``{param:NAME}`` (any other), so
``str(error)`` reads ``date_format`` where the CLI prints ``--date-format`` and the web API
its field name.  Each case below raises an error through the library, checks that its words
are the library's (no ``--flag``, the parameter named, ``error.param`` set) and that
``render(cli.FLAGS)`` is exactly the line the CLI prints — as it printed it before.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import custseg
from custseg import cli, errors, pipeline, sources
from custseg.cli import main
from custseg.errors import ConfigError, CustsegError, DataError, InputError, OutputError, SchemaError, literal
from custseg.request import RunRequest, SegmentConfig, SourceSpec

FLAG = re.compile(r"--[a-z]")

AMBIGUOUS = (
    "InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n"
    "1,A,01/02/2011 10:00,1,2.0\n2,B,03/04/2011 11:00,2,3.0\n"
    "3,A,05/06/2011 09:00,1,4.0\n4,C,07/08/2011 08:30,3,1.5\n"
)


def cli_error(args: list[str], capsys) -> str:
    """What the CLI prints for ``args``: its one error line, without ``custseg: error: ``."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("custseg: error: ") and "\n" not in err, err
    return err.removeprefix("custseg: error: ")


def in_library_words(error: CustsegError, *names: str) -> str:
    text = str(error)
    assert not FLAG.search(text), text
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
    return text


def customers(path: Path, rows: int = 30) -> Path:
    pd.DataFrame({
        "customer_id": range(1, rows + 1),
        "age": [20 + (i * 7) % 50 for i in range(rows)],
        "spend": [float(10 + (i * 37) % 400) for i in range(rows)],
        "visits": [1 + (i * 3) % 11 for i in range(rows)],
    }).to_csv(path, index=False)
    return path


# --- errors raised through the library ---------------------------------------------------------

def test_ambiguous_day_month_dates_name_date_format(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text(AMBIGUOUS, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        pipeline.customer_table(pipeline.load(SourceSpec(str(path))))
    error = caught.value
    assert error.param == "date_format"
    assert in_library_words(error, "date_format").endswith(
        "read both as day/month and month/day; pass date_format '%m/%d/%Y %H:%M' or date_format '%d/%m/%Y %H:%M'"
    )
    before = (f"{path}: column 'InvoiceDate' has dates like '01/02/2011 10:00' that read both as day/month and "
              "month/day; pass --date-format '%m/%d/%Y %H:%M' or --date-format '%d/%m/%Y %H:%M'")
    assert error.render(cli.FLAGS) == before
    assert cli_error(["features", str(path), "--out", str(tmp_path / "f.csv")], capsys) == before
    # inspect shows the same reason, as an error each edge renders
    found = pipeline.inspect(pipeline.load(SourceSpec(str(path)))).quality["cleaning"]
    assert isinstance(found, DataError) and found.param == "date_format"
    assert in_library_words(found, "date_format").startswith("not possible as it stands: column 'InvoiceDate'")
    assert found.render(cli.FLAGS) == "not possible as it stands: " + before.removeprefix(f"{path}: ")


def test_unparseable_dates_name_date_format_and_bad_values(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text(AMBIGUOUS.replace("07/08/2011 08:30", "31/02/2011 08:30").replace("01/02/2011", "13/02/2011"),
                    encoding="utf-8")
    with pytest.raises(DataError) as caught:
        pipeline.customer_table(pipeline.load(SourceSpec(str(path))))
    text = in_library_words(caught.value, "date_format", "bad_values")
    assert text.endswith("fix them, pass date_format, or drop them with bad_values drop")
    before = (f"{path}: column 'InvoiceDate' has 1 unparseable date, e.g. '31/02/2011 08:30' on data row 4; "
              "fix them, pass --date-format, or drop them with --bad-values drop")
    assert caught.value.render(cli.FLAGS) == before
    assert cli_error(["features", str(path), "--out", str(tmp_path / "f.csv")], capsys) == before


def test_missing_customer_id_names_mapping(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text(AMBIGUOUS.replace("CustomerID", "Who"), encoding="utf-8")
    with pytest.raises(SchemaError) as caught:
        pipeline.load(SourceSpec(str(path)))
    assert caught.value.param == "mapping"
    assert in_library_words(caught.value, "mapping").endswith("; name it with mapping customer_id=COLUMN")
    before = (f"{path}: no customer id column found among InvoiceNo, Who, InvoiceDate, Quantity, UnitPrice; "
              "name it with --map customer_id=COLUMN")
    assert caught.value.render(cli.FLAGS) == before
    assert cli_error(["features", str(path), "--out", str(tmp_path / "f.csv")], capsys) == before


def test_unknown_value_column_names_value_column(tmp_path, capsys):
    path = customers(tmp_path / "people.csv")
    config = SegmentConfig(algorithm="kmeans", n_clusters=2, value_column="Charges")
    with pytest.raises(ConfigError) as caught:
        pipeline.run_segmentation(pipeline.load(SourceSpec(str(path))), config=config)
    assert caught.value.param == "value_column"
    assert in_library_words(caught.value, "value_column").startswith(
        f"{path}: value_column Charges: no such column among the customer features; choose one of "
    )
    before = f"{path}: --value Charges: no such column among the customer features; choose one of age, spend, visits"
    assert caught.value.render(cli.FLAGS) == before
    args = ["segment", str(path), "--out", str(tmp_path / "run"), "--algorithm", "kmeans", "--k", "2",
            "--no-report", "--value", "Charges"]
    assert cli_error(args, capsys) == before


def test_unwritable_out_names_out(tmp_path, monkeypatch, capsys):
    path = customers(tmp_path / "people.csv")
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else access(p, mode, **kw))
    request = RunRequest(SourceSpec(str(path)), segment=SegmentConfig(algorithm="kmeans", n_clusters=2), report=False)
    with pytest.raises(OutputError) as caught:
        pipeline.run(request, locked / "run")
    assert caught.value.param == "out"
    assert in_library_words(caught.value, "out") == (
        f"out {locked / 'run'}: cannot write in '{locked}' (read-only, or no permission); choose another place"
    )
    before = f"--out {locked / 'run'}: cannot write in '{locked}' (read-only, or no permission); choose another place"
    assert caught.value.render(cli.FLAGS) == before
    args = ["segment", str(path), "--out", str(locked / "run"), "--algorithm", "kmeans", "--k", "2", "--no-report"]
    assert cli_error(args, capsys) == before


def test_bad_segment_map_names_segment_map(tmp_path, capsys):
    orders = tmp_path / "orders.csv"
    orders.write_text(AMBIGUOUS, encoding="utf-8")
    missing, partial = tmp_path / "nope.csv", tmp_path / "map.csv"
    partial.write_text("pattern,segment\n5..,Recent\n", encoding="utf-8")
    for path, names, words, before in [
        (missing, ["segment_map"], f"segment_map {missing}: no such file", f"--segment-map {missing}: no such file"),
        (partial, [], f"{partial}: codes 111, 112, 113, 114, 115 … match no pattern; add a catch-all line such as "
                      "'...,Other'", None),
    ]:
        with pytest.raises(ConfigError) as caught:
            pipeline.load_segment_map(path)
        assert caught.value.param == "segment_map"
        assert in_library_words(caught.value, *names) == words
        assert caught.value.render(cli.FLAGS) == (before or words)
        args = ["rfm", str(orders), "--out", str(tmp_path / "rfm.csv"), "--segment-map", str(path)]
        assert cli_error(args, capsys) == (before or words)


def test_unknown_and_empty_sheets_name_sheet(tmp_path, capsys):
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Orders"
    for row in [line.split(",") for line in AMBIGUOUS.splitlines()]:
        book.active.append(row)
    book.create_sheet("Empty")
    path = tmp_path / "orders.xlsx"
    book.save(path)
    with pytest.raises(InputError) as caught:
        sources.read(path, sheet="Nope")
    assert caught.value.param == "sheet"
    assert in_library_words(caught.value) == f"{path}: no sheet 'Nope'; sheets are Orders, Empty"
    before = f"{path}: no sheet 'Nope'; sheets are Orders, Empty"
    assert caught.value.render(cli.FLAGS) == before
    out = str(tmp_path / "f.csv")
    assert cli_error(["features", str(path), "--sheet", "Nope", "--out", out], capsys) == before

    with pytest.raises(InputError) as caught:
        sources.read(path, sheet="Empty")
    assert caught.value.param == "sheet"
    assert in_library_words(caught.value, "sheet") == f"{path}: sheet 'Empty' is empty; pick another with sheet"
    before = f"{path}: sheet 'Empty' is empty; pick another with --sheet"
    assert caught.value.render(cli.FLAGS) == before
    assert cli_error(["features", str(path), "--sheet", "Empty", "--out", out], capsys) == before


def test_several_problems_name_each_parameter():
    request = RunRequest(SourceSpec("orders.csv", kind="both"), segment=SegmentConfig(n_clusters=1))
    with pytest.raises(ConfigError) as caught:
        request.validate()
    assert caught.value.param is None and [p.param for p in caught.value.problems] == ["kind", "n_clusters"]
    assert str(caught.value) == ("2 problems: kind must be one of transactions, customers, got 'both'; "
                                 "n_clusters must be auto or a whole number ≥ 2, got '1'")
    assert caught.value.render(cli.FLAGS) == ("2 problems: --kind must be one of transactions, customers, got 'both'; "
                                              "--k must be auto or a whole number ≥ 2, got '1'")


# --- user text is never taken for a placeholder ----------------------------------------------

def test_braces_in_file_and_column_names_are_shown_as_they_are(tmp_path, capsys):
    folder = tmp_path / "{param:out} {2024}"
    folder.mkdir()
    path = folder / "orders {param}.csv"
    path.write_text(AMBIGUOUS.replace("CustomerID", "{param}").replace("Quantity", "{x}")
                    .replace("UnitPrice", "{param:sheet}"), encoding="utf-8")
    with pytest.raises(SchemaError) as caught:
        pipeline.load(SourceSpec(str(path)))
    shown = f"{path}: no customer id column found among InvoiceNo, {{param}}, InvoiceDate, {{x}}, {{param:sheet}}; "
    assert str(caught.value) == shown + "name it with mapping customer_id=COLUMN"
    assert caught.value.render(cli.FLAGS) == shown + "name it with --map customer_id=COLUMN"
    assert cli_error(["features", str(path), "--out", str(tmp_path / "f.csv")], capsys) == (
        shown + "name it with --map customer_id=COLUMN")


def test_braces_in_values_and_prefixes_are_shown_as_they_are(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text(AMBIGUOUS.replace("07/08/2011 08:30", "{param:date_format}"), encoding="utf-8")
    policy = pipeline.cleaning.Policy(date_format="%d/%m/%Y %H:%M")
    with pytest.raises(DataError) as caught:
        pipeline.customer_table(pipeline.load(SourceSpec(str(path))), policy=policy)
    assert "e.g. '{param:date_format}' on data row 4; fix them, pass date_format, or drop" in str(caught.value)
    assert "e.g. '{param:date_format}' on data row 4; fix them, pass --date-format, or drop" in (
        caught.value.render(cli.FLAGS))
    args = ["features", str(path), "--date-format", "%d/%m/%Y %H:%M", "--out", str(tmp_path / "f.csv")]
    assert cli_error(args, capsys) == caught.value.render(cli.FLAGS)
    prefixed = ConfigError("{param} must be 2 or more", param="n_clusters").with_prefix("a {param} b {{param}}: ")
    assert str(prefixed) == "a {param} b {{param}}: n_clusters must be 2 or more"
    assert prefixed.render(cli.FLAGS) == "a {param} b {{param}}: --k must be 2 or more"


@given(st.text())
def test_literal_text_renders_as_itself(text):
    for error in (CustsegError(literal(text)), CustsegError(literal(text), param="out")):
        assert str(error) == error.render(cli.FLAGS) == text
        assert str(CustsegError("x").with_prefix(text)) == text + "x"
        assert CustsegError(error.named_template, param="sheet").render(cli.FLAGS) == text


# --- the placeholder rules --------------------------------------------------------------------

def test_placeholders():
    names = {"out": "--out", "bad_values": "--bad-values"}
    error = CustsegError("{param} x: {param:bad_values} drop, {param:encoding} utf-8", param="out")
    assert str(error) == "out x: bad_values drop, encoding utf-8"
    assert error.render(names) == "--out x: --bad-values drop, encoding utf-8"  # an unlisted name: the library's
    assert error.named_template == "{param:out} x: {param:bad_values} drop, {param:encoding} utf-8"
    odd = CustsegError("{param} is not a field", param="segment.my field")
    assert CustsegError(odd.named_template).render({"segment.my field": "x"}) == str(odd) == (
        "segment.my field is not a field")
    assert CustsegError("{param:segment.n_clusters} must be 2 or more").render({"segment.n_clusters": "k"}) == (
        "k must be 2 or more")
    # Only the exact forms are placeholders; a doubled pair shows a placeholder's text.
    for text in ("{param}", "{param:}", "{param:bad name}", "{ param }", "{parameter}", "{param:1x}", "{{param}",
                 "{param}}", "{x}", "{}", "{0}"):
        assert str(CustsegError(text)) == text, text
    assert str(CustsegError("{{param}} {{param:out}} {{{param}}}", param="sheet")) == "{param} {param:out} {{param}}"
    assert literal("{param} {param:out} {{param}} {x}") == "{{param}} {{param:out}} {{{param}}} {x}"


def test_errors_module_examples():
    assert doctest.testmod(errors).failed == 0


# --- no flag creeps back into a library message ---------------------------------------------------

SRC = Path(custseg.__file__).parent

#: Files not scanned yet.
NOT_YET_CONVERTED_FILES: set[str] = set()

#: Messages still spelling a flag, to be converted: tests elsewhere assert these words on the
#: library's error (``str``), so they change together with those tests.  (file, words in it)
NOT_YET_CONVERTED: set[tuple[str, str]] = set()

_ERRORS = {name for name in dir(errors) if isinstance(getattr(errors, name), type)
           and issubclass(getattr(errors, name), CustsegError)}


def _texts(node: ast.AST):
    """The string literals of a message expression; an f-string with ``{…}`` for each value."""
    if isinstance(node, ast.JoinedStr):
        yield "".join(part.value if isinstance(part, ast.Constant) else "{…}" for part in node.values)
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                yield from _texts(part.value)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            yield node.value
    else:
        for child in ast.iter_child_nodes(node):
            yield from _texts(child)


def _messages(tree: ast.AST):
    """Every message expression: what ``raise`` raises, and the arguments of an error class."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.exc
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in _ERRORS or name.endswith("Error"):
                yield from node.args


def _flags_in_library_messages() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if path.name == "cli.py":  # an edge: its own flags are its words
            continue
        if relative in NOT_YET_CONVERTED_FILES or relative.split("/")[0] in NOT_YET_CONVERTED_FILES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for message in _messages(tree):
            for text in _texts(message):
                text = re.sub(r"`custseg [^`]*`", "`…`", text)  # a command line to run is not a parameter
                if FLAG.search(text):
                    found.add((relative, text))
    return found


def test_library_messages_spell_no_flag():
    found = _flags_in_library_messages()
    unexpected = sorted((file, text) for file, text in found
                        if not any(file == known and words in text for known, words in NOT_YET_CONVERTED))
    assert not unexpected, "messages spelling a CLI flag (write {param} or {param:NAME}):\n" + "\n".join(
        f"  {file}: {text!r}" for file, text in unexpected)
    stale = sorted(entry for entry in NOT_YET_CONVERTED
                   if not any(file == entry[0] and entry[1] in text for file, text in found))
    assert not stale, f"converted: drop them from NOT_YET_CONVERTED: {stale}"


def test_a_segment_map_without_its_columns_says_so_once(tmp_path, capsys):
    orders = tmp_path / "orders.csv"
    orders.write_text(AMBIGUOUS, encoding="utf-8")
    wrong = tmp_path / "map.csv"
    wrong.write_text("code,name\n5..,Recent\n", encoding="utf-8")
    expected = f"--segment-map {wrong}: needs columns 'pattern,segment', got ['code', 'name']"
    args = ["rfm", str(orders), "--out", str(tmp_path / "rfm.csv"), "--segment-map", str(wrong)]
    assert cli_error(args, capsys) == expected  # was wrapped in "cannot be read (… needs columns …)"
