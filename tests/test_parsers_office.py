"""Word, PDF and JSONL files made here, read as their authors' tools wrote them: headings in custom
styles, tables in content controls, producers' placeholder titles, titles that are numbers."""

from __future__ import annotations

import json

import pytest
from test_parsers import make_pdf, only, parse


def wordml(markup: str):
    """One WordprocessingML element, the w: namespace declared on it."""
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    return parse_xml(markup.replace(">", f" {nsdecls('w')}>", 1))


def set_outline_level(properties_owner, level: int) -> None:
    """Give a paragraph or a style its own ``w:outlineLvl``, as Word's paragraph dialog writes it."""
    properties_owner.get_or_add_pPr().append(wordml(f'<w:outlineLvl w:val="{level}"></w:outlineLvl>'))


# -- DOCX headings -------------------------------------------------------------------------------


def test_docx_headings_in_styles_based_on_heading_styles_or_set_by_outline_level(tmp_path):
    """Only styles named "Heading n" were headings: a template's "Chapter" (based on Heading 1) and a
    paragraph given an outline level were body text, so the document was one section without a path."""
    from docx import Document
    from docx.enum.style import WD_STYLE_TYPE

    document = Document()
    chapter = document.styles.add_style("Chapter", WD_STYLE_TYPE.PARAGRAPH)
    chapter.base_style = document.styles["Heading 1"]
    topic = document.styles.add_style("Topic", WD_STYLE_TYPE.PARAGRAPH)
    topic.base_style = chapter
    set_outline_level(topic.element, 2)  # its own outline level outranks its base's
    document.add_paragraph("Security chapter", style="Chapter")
    document.add_paragraph("Rotate keys.")
    document.add_paragraph("Key storage", style="Topic")
    document.add_paragraph("Keys live in the vault.")
    set_outline_level(document.add_paragraph("Backups")._p, 0)
    document.add_paragraph("Nightly at two.")
    document.add_paragraph("Contents", style="TOC Heading")  # based on Heading 1, outline level 9: body text
    set_outline_level(document.add_paragraph("Marked as body text", style="Chapter")._p, 9)
    document.add_paragraph("Restores are tested monthly.")
    document.save(str(tmp_path / "security.docx"))

    sections = [(s.heading_path, s.text) for s in only(tmp_path / "security.docx").sections]
    assert sections == [
        (("Security chapter",), "Rotate keys."),
        (("Security chapter", "Key storage"), "Keys live in the vault."),
        (("Backups",), "Nightly at two.\n\nContents\n\nMarked as body text\n\nRestores are tested monthly."),
    ]


# -- DOCX tables ---------------------------------------------------------------------------------


def wrap(elements, wrapper: str = "sdt") -> None:
    """Put elements (adjacent siblings) in a content control (``w:sdt``, its ``w:sdtContent``) or in
    custom XML, where they stood: the XML of a form's repeating section or a bound template."""
    outer = wordml("<w:sdt><w:sdtPr></w:sdtPr><w:sdtContent></w:sdtContent></w:sdt>" if wrapper == "sdt"
                   else '<w:customXml w:element="approvals"></w:customXml>')
    elements[0].addprevious(outer)
    inner = outer[1] if wrapper == "sdt" else outer
    for element in elements:
        inner.append(element)


def test_docx_table_rows_and_cells_in_content_controls_and_custom_xml_are_read(tmp_path):
    """python-docx's rows and cells see only a table's direct w:tr and a row's direct w:tc: rows of a
    repeating section, a cell in a content control and rows in custom XML were left out without a word.
    Merged cells read as before: a spanned cell once, a vertically merged one in each row, across the
    control's edge too."""
    from docx import Document

    document = Document()
    table = document.add_table(rows=6, cols=3)
    for row, values in enumerate([("Step", "Owner", "Due"), ("Draft", "Ann", "May"), ("Review", "Bob", ""),
                                  ("Sign", "Cy", "July"), ("Approver", "Jane Doe", "Aug"), ("Archive", "Dan", "")]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    table.cell(1, 2).merge(table.cell(2, 2))  # "May" spans two rows, the second inside the control
    table.cell(5, 1).merge(table.cell(5, 2))  # "Dan" spans two columns
    rows = table._tbl.tr_lst
    wrap(rows[2:4])  # a repeating section's rows
    wrap([rows[4].tc_lst[1]])  # a form field's cell
    wrap(rows[5:6], "customXml")
    document.save(str(tmp_path / "form.docx"))

    [section] = only(tmp_path / "form.docx").sections
    assert section.text.split("\n") == [
        "Step | Owner | Due",
        "Draft | Ann | May",
        "Review | Bob | May",
        "Sign | Cy | July",
        "Approver | Jane Doe | Aug",
        "Archive | Dan",
    ]


# -- PDF titles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("placeholder", ["Microsoft Word - draft_v3.docx", "Microsoft PowerPoint - Deck",
                                         "untitled", "Untitled document", "Untitled-1", "report.DOC",
                                         r"C:\temp\policy notes.txt", "scan_0042.pdf"])
def test_a_pdf_producers_placeholder_title_gives_way_to_the_file_name(tmp_path, placeholder):
    """Office's print driver and other producers write a title when the author wrote none: it went before
    every chunk's text, and named every hit and citation, instead of the file."""
    doc = only(make_pdf(tmp_path / "key-rotation-policy.pdf", ["Keys rotate every ninety days."], placeholder))
    assert doc.title == "key-rotation-policy"


@pytest.mark.parametrize("title", ["Untitled Symphony programme notes", "Working with .txt files",
                                   "Microsoft Word features explained", "Acme Inc."])
def test_a_pdf_title_that_only_resembles_a_placeholder_is_kept(tmp_path, title):
    assert only(make_pdf(tmp_path / "notes.pdf", ["Body text."], title)).title == title


# -- JSONL titles --------------------------------------------------------------------------------


def test_a_jsonl_title_that_is_a_number_is_kept_and_one_that_is_not_text_is_said(tmp_path):
    """A title 2024 was dropped without a word, as were a list or an object: a number is the title as
    written, and anything else is left out with a warning naming the lines."""
    records = ['{"_id": "1", "title": 2024, "text": "Annual report."}',
               '{"_id": "2", "title": 3.5, "text": "Release notes."}',
               '{"_id": "3", "title": ["Keys", "Rotation"], "text": "Rotate keys yearly."}',
               '{"_id": "4", "title": null, "text": "No title, and none meant."}',
               '{"_id": "5", "title": true, "text": "Flag."}',
               '{"_id": "6", "title": 1e400, "text": "Overflow."}',
               '{"_id": "7", "title": {"en": "Backups"}, "text": ""}',  # no text, and no title left to index
               json.dumps({"_id": "8", "title": 7, "text": ""})]  # a number alone is indexed as the text
    (tmp_path / "c.jsonl").write_text("\n".join(records) + "\n")
    docs = parse(tmp_path / "c.jsonl")
    assert [(d.doc_id, d.title) for d in docs] == [("1", "2024"), ("2", "3.5"), ("3", ""), ("4", ""), ("5", ""),
                                                  ("6", ""), ("8", "7")]
    assert docs[-1].sections[0].text == "7"
    assert docs[0].warnings == [
        "1 record with neither text nor title left out (line 7)",
        "field title left out of 4 records (lines 3, 5, 6, 7): a title is text or a finite number; "
        "write it as a JSON string to keep it",
    ]
