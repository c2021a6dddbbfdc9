"""Parsers on real files made here: every format, and the failures ingestion must report."""

from __future__ import annotations

import json
import logging
import random
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from unirank.errors import ParseError, UnsupportedFormatError
from unirank.ingest.parsers import SUPPORTED_EXTENSIONS, parse_document, parser_for
from unirank.ingest.parsers.common import stem_from_uri


def parse(path: Path):
    return parse_document(path.read_bytes(), path.resolve().as_uri())


def only(path: Path):
    docs = parse(path)
    assert len(docs) == 1
    return docs[0]


# -- PDF -----------------------------------------------------------------------------------------


def make_pdf(path: Path, pages: list[str], title: str | None = "Security whitepaper") -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


PAGES = [
    "Encryption at rest. All data is encrypted with AES-256 and keys are rotated yearly.",
    "Access control. Engineers reach production through a bastion host with short-lived certificates.",
]


def test_pdf_has_one_section_per_page_and_its_metadata_title(tmp_path):
    doc = only(make_pdf(tmp_path / "whitepaper.pdf", PAGES))
    assert doc.title == "Security whitepaper"
    assert doc.doc_id == (tmp_path / "whitepaper.pdf").resolve().as_uri()
    assert [s.page for s in doc.sections] == [1, 2]
    assert "AES-256" in doc.sections[0].text and "bastion" not in doc.sections[0].text
    assert "bastion host" in doc.sections[1].text


def test_running_headers_and_page_numbers_are_not_indexed(tmp_path):
    from fpdf import FPDF

    class Handbook(FPDF):
        def header(self):
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, "Acme Corp - Internal handbook - Confidential")
            self.ln(8)

        def footer(self):
            self.set_y(-15)
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, f"Page {self.page_no()} of {{nb}}")

    pdf = Handbook()
    topics = ["Travel is booked through the portal.", "Expenses are filed within 30 days.",
              "Laptops are replaced every three years.", "Badges are collected at reception."]
    for topic in topics:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, f"{topic}\nAsk the Confidential desk for exceptions.\nPolicy {len(topic)} applies.")
    pdf.output(str(tmp_path / "handbook.pdf"))
    doc = only(tmp_path / "handbook.pdf")
    assert [s.page for s in doc.sections] == [1, 2, 3, 4]
    for section, topic in zip(doc.sections, topics):
        # kept: a line repeated on every page but inside the body, and one at the foot whose number
        # differs from page to page without counting the pages
        assert section.text.split("\n") == [topic, "Ask the Confidential desk for exceptions.",
                                             f"Policy {len(topic)} applies."]

    two_pages = make_pdf(tmp_path / "short.pdf", ["Acme Corp\nFirst page body.", "Acme Corp\nSecond page body."])
    assert [s.text.split("\n")[0] for s in only(two_pages).sections] == ["Acme Corp", "Acme Corp"]  # too few to tell


def test_short_pages_keep_lines_that_only_resemble_running_lines(tmp_path):
    """An invoice a page: the invoice numbers rise by one and the amounts rise, yet neither is a page
    number, and the repeated payment terms are the body, not a header; nothing may be cut."""
    customers = ["Alpha", "Beta", "Gamma", "Delta"]
    invoices = [f"Invoice number {1017 + i}\nCustomer: {customer}\n"
                f"Payment terms: net 30 days from the invoice date\nAmount due: {1250 + 100 * i} EUR"
                for i, customer in enumerate(customers)]
    doc = only(make_pdf(tmp_path / "invoices.pdf", invoices))
    assert [s.text for s in doc.sections] == invoices


def test_only_lines_shaped_like_page_numbers_count_pages(tmp_path):
    pages = [f"Ticket {4711 + i}\nThe printer on floor {i + 2} jams.\nIt was reset.\n"
             f"Continued on page {2 * i + 3}\n- {i + 41} -" for i in range(4)]
    doc = only(make_pdf(tmp_path / "tickets.pdf", pages))
    # "- 41 -" counts the pages (an excerpt may start at page 41); a ticket number counting up at the
    # top edge does not look like a page number, and "page 3, 5, 7" does not go up in step with the pages
    assert [s.text for s in doc.sections] == [page.rsplit("\n", 1)[0] for page in pages]


def test_a_page_never_loses_most_of_its_lines(tmp_path):
    pages = [f"Acme Corp - Internal handbook\nRule {i}: lock your screen.\nPage {i + 1} of 4" for i in range(4)]
    doc = only(make_pdf(tmp_path / "rules.pdf", pages))
    assert [s.text for s in doc.sections] == pages  # a header left on a short page costs less than its body


def test_words_broken_across_lines_are_joined(tmp_path):
    pdf = make_pdf(tmp_path / "keys.pdf", ["Keys are replaced by automatic rota-\ntion every ninety days.\n"
                                           "Costs fell from 2019-\n2020 in the EU-\nUS region."])
    text = only(pdf).sections[0].text
    assert "automatic rotation every" in text  # one word again
    assert "2019-\n2020" in text and "EU-\nUS" in text  # numbers and capitals keep their hyphen


def test_pdf_without_a_metadata_title_is_named_after_the_file(tmp_path):
    doc = only(make_pdf(tmp_path / "quarterly-report.pdf", PAGES[:1], title=None))
    assert doc.title == "quarterly-report"


def test_corrupt_pdfs_are_parse_errors(tmp_path):
    garbage = tmp_path / "broken.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + random.Random(7).randbytes(4096))
    with pytest.raises(ParseError, match="PDF"):
        parse(garbage)

    whole = make_pdf(tmp_path / "whole.pdf", PAGES).read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ParseError, match="PDF"):
        parse(truncated)


def damaged_pages(pdf: bytes, pages: list[int], *, unclosed_array: bool = False) -> bytes:
    """The PDF with these pages' content streams (1-based) overwritten by bytes that do not inflate, or
    (``unclosed_array``) by text operators whose array never closes, which pypdf raises on."""
    import io

    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    for number in pages:
        contents = writer.pages[number - 1]["/Contents"].get_object()
        if unclosed_array:
            contents._data = b"BT /F1 12 Tf 72 712 Td [ (x) 5 (y ] TJ ET ) Tj ET"
            del contents["/Filter"]
        else:
            contents._data = b"x\x9c\x00\x01garbage-not-zlib"
            contents[NameObject("/Filter")] = NameObject("/FlateDecode")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_page_whose_text_cannot_be_read_is_reported(tmp_path, caplog):
    """A corrupt content stream gives pypdf's text extraction nothing and a warning, which was silenced:
    the page went missing from the index without a word."""
    whole = make_pdf(tmp_path / "whole.pdf", [*PAGES, "Retention. Logs are kept for one year."]).read_bytes()
    (tmp_path / "damaged.pdf").write_bytes(damaged_pages(whole, [2]))
    with caplog.at_level(logging.WARNING):
        doc = only(tmp_path / "damaged.pdf")
    assert [s.page for s in doc.sections] == [1, 3]
    [warning] = doc.warnings  # the ingest report lists it under the file's path
    assert warning.startswith("page 2: no text could be read (")
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]  # pypdf's own warnings stay quiet

    (tmp_path / "ruined.pdf").write_bytes(damaged_pages(whole, [1, 2, 3]))
    with pytest.raises(ParseError, match=r"damaged PDF: page 1: no text could be read .*\(and 2 more pages\)"):
        parse(tmp_path / "ruined.pdf")


def test_a_page_pypdf_raises_on_is_left_out_and_reported_and_the_other_pages_are_read(tmp_path):
    """pypdf raised on page 2's content stream (an array that never closes), and the whole PDF failed
    as "not a readable PDF"; pages 1 and 3 were lost with it."""
    whole = make_pdf(tmp_path / "whole.pdf", [*PAGES, "Retention. Logs are kept for one year."]).read_bytes()
    (tmp_path / "damaged.pdf").write_bytes(damaged_pages(whole, [2], unclosed_array=True))
    doc = only(tmp_path / "damaged.pdf")
    assert [s.page for s in doc.sections] == [1, 3] and "Logs are kept" in doc.sections[1].text
    [warning] = doc.warnings
    assert warning.startswith("page 2: no text could be read (PdfReadError: ")

    (tmp_path / "ruined.pdf").write_bytes(damaged_pages(whole, [1, 2, 3], unclosed_array=True))
    with pytest.raises(ParseError, match=r"damaged PDF: page 1: no text could be read .*\(and 2 more pages\)"):
        parse(tmp_path / "ruined.pdf")


def test_a_pdf_with_no_text_needs_ocr(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 80, 40)
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(ParseError, match="no extractable text.*OCR"):
        parse(tmp_path / "scan.pdf")


def test_a_password_protected_pdf_is_refused(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.cell(text="Top secret merger plans.")
    pdf.set_encryption(owner_password="owner", user_password="reader")
    pdf.output(str(tmp_path / "locked.pdf"))
    with pytest.raises(ParseError, match="encrypted"):
        parse(tmp_path / "locked.pdf")


# -- DOCX ----------------------------------------------------------------------------------------


def test_docx_headings_give_heading_paths_and_tables_are_read(tmp_path):
    from docx import Document

    document = Document()
    document.add_heading("Travel policy", level=0)
    document.add_paragraph("This policy applies to all staff.")
    document.add_heading("Booking", level=1)
    document.add_paragraph("Book flights through the travel portal.")
    document.add_heading("Hotels", level=2)
    document.add_paragraph("Hotels up to 150 euros per night.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "City", "Nightly limit"
    table.cell(1, 0).text, table.cell(1, 1).text = "Paris", "210 euros"
    document.add_heading("Expenses", level=1)
    document.add_paragraph("Submit receipts within 30 days.")
    document.save(str(tmp_path / "policy.docx"))

    doc = only(tmp_path / "policy.docx")
    assert doc.title == "Travel policy"  # no core title: the Title paragraph
    paths = {s.heading_path: s.text for s in doc.sections}
    assert paths[("Travel policy",)] == "This policy applies to all staff."
    assert paths[("Travel policy", "Booking")] == "Book flights through the travel portal."
    hotels = paths[("Travel policy", "Booking", "Hotels")]
    assert "150 euros" in hotels and "Paris | 210 euros" in hotels and "City | Nightly limit" in hotels
    assert paths[("Travel policy", "Expenses")] == "Submit receipts within 30 days."


def test_docx_title_prefers_core_properties_then_falls_back_to_the_stem(tmp_path):
    from docx import Document

    document = Document()
    document.core_properties.title = "Official title"
    document.add_heading("Visible heading", level=1)
    document.add_paragraph("Body.")
    document.save(str(tmp_path / "a.docx"))
    assert only(tmp_path / "a.docx").title == "Official title"

    document = Document()
    document.add_paragraph("Just a body, no headings.")
    document.save(str(tmp_path / "meeting-notes.docx"))
    doc = only(tmp_path / "meeting-notes.docx")
    assert doc.title == "meeting-notes" and doc.sections[0].heading_path == ()


def test_docx_reads_tracked_insertions_and_content_controls_but_not_deletions(tmp_path):
    """python-docx's paragraph text skips runs in ``w:ins`` and inline ``w:sdt``, and its block iteration
    skips body-level ``w:sdt``: a document under review or a filled-in form lost that text."""
    from docx import Document
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    def element(markup: str):
        """One WordprocessingML element, the w: namespace declared on it."""
        return parse_xml(markup.replace(">", f" {nsdecls('w')}>", 1))

    revision = 'w:id="1" w:author="Reviewer" w:date="2024-01-01T00:00:00Z"'
    document = Document()
    heading = document.add_heading("Expenses", level=1)
    heading._p.append(element(f"<w:ins {revision}><w:r><w:t xml:space='preserve'> and travel</w:t></w:r></w:ins>"))
    paragraph = document.add_paragraph("Receipts are due within ")
    paragraph._p.append(element(f"<w:del {revision}><w:r><w:delText>60</w:delText></w:r></w:del>"))
    paragraph._p.append(element(f"<w:ins {revision}><w:r><w:t>30</w:t></w:r></w:ins>"))
    paragraph._p.append(element("<w:r><w:t xml:space='preserve'> days, signed by </w:t></w:r>"))
    paragraph._p.append(element(
        "<w:sdt><w:sdtPr><w:alias w:val='Approver'/></w:sdtPr><w:sdtContent><w:r><w:t>the team lead</w:t></w:r>"
        "</w:sdtContent></w:sdt>"))
    paragraph._p.append(element("<w:r><w:t>.</w:t></w:r>"))
    document.add_paragraph("Withdrawn rule:")._p.append(
        element(f"<w:del {revision}><w:r><w:delText>Taxis are never refunded.</w:delText></w:r></w:del>"))
    form = element(
        "<w:sdt><w:sdtPr/><w:sdtContent>"
        "<w:p><w:r><w:t>Cost centre 4711 pays for conferences.</w:t></w:r></w:p>"
        "<w:sdt><w:sdtContent><w:p><w:r><w:t>Nested control text.</w:t></w:r></w:p></w:sdtContent></w:sdt>"
        "</w:sdtContent></w:sdt>")
    document.element.body.insert(len(document.element.body) - 1, form)  # before the final w:sectPr
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Limit"
    table.cell(0, 1)._tc.append(element(
        "<w:sdt><w:sdtContent><w:p><w:r><w:t>210 euros</w:t></w:r></w:p></w:sdtContent></w:sdt>"))
    document.save(str(tmp_path / "review.docx"))

    [section] = only(tmp_path / "review.docx").sections
    assert section.heading_path == ("Expenses and travel",)
    assert section.text.split("\n\n") == [
        "Receipts are due within 30 days, signed by the team lead.",
        "Withdrawn rule:",
        "Cost centre 4711 pays for conferences.",
        "Nested control text.",
        "Limit | 210 euros",
    ]


def test_docx_page_and_column_breaks_part_words_and_text_boxes_are_read_once(tmp_path):
    """python-docx reads a page or column break as "" ("AlphaBeta") and no text box at all: a flyer's
    boxed text was left out without a word. Word writes each box twice (DrawingML, and VML in
    mc:Fallback); it is read once, after the paragraph it is anchored in."""
    from docx import Document
    from docx.enum.text import WD_BREAK
    from docx.oxml import parse_xml

    def box(text: str, inner: str = "") -> str:
        return f"<w:txbxContent><w:p><w:r><w:t>{text}</w:t></w:r>{inner}</w:p></w:txbxContent>"

    def anchored(markup: str) -> str:
        """A run holding the box as Word writes it: a DrawingML shape, with a VML copy as the fallback."""
        return ("<w:r><mc:AlternateContent><mc:Choice Requires='wps'><w:drawing><wp:anchor><a:graphic>"
                f"<a:graphicData><wps:wsp><wps:txbx>{markup}</wps:txbx></wps:wsp></a:graphicData></a:graphic>"
                f"</wp:anchor></w:drawing></mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox>{markup}"
                "</v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r>")

    namespaces = (
        'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
        'xmlns:v="urn:schemas-microsoft-com:vml"')
    document = Document()
    breaks = document.add_paragraph().add_run("Alpha")
    breaks.add_break(WD_BREAK.PAGE)
    breaks.add_text("Beta")
    breaks.add_break(WD_BREAK.COLUMN)
    breaks.add_text("Gamma")
    host = document.add_paragraph("Body before box.")
    host._p.append(parse_xml(f"<w:wrap {namespaces}>{anchored(box('Boxed offer.', anchored(box('Inner box.'))))}"
                             "</w:wrap>")[0])
    document.add_paragraph("Body after box.")
    document.save(str(tmp_path / "flyer.docx"))

    [section] = only(tmp_path / "flyer.docx").sections
    assert section.text.split("\n\n") == [
        "Alpha\nBeta\nGamma", "Body before box.", "Boxed offer.", "Inner box.", "Body after box."]


def test_a_corrupt_docx_is_a_parse_error(tmp_path):
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(ParseError, match="docx"):
        parse(tmp_path / "bad.docx")


# -- HTML ----------------------------------------------------------------------------------------


HTML = """<!doctype html>
<html><head><title>Incident runbook</title><style>body { color: red }</style>
<script>var tracking = "analytics";</script></head>
<body>
<nav>Home | Runbooks</nav><header>Company header</header>
<h1>Incident response</h1>
<p>Anyone may declare an incident.</p>
<h2>Severity</h2>
<p>SEV1 means the product is down.</p><p>SEV2 means a feature is <b>degraded</b>.</p>
<ul><li>Page the commander</li><li>Open a channel</li></ul>
<h3>Examples</h3>
<table><tr><th>Level</th><th>Example</th></tr><tr><td>SEV1</td><td>Login broken</td></tr></table>
<h2>Roles</h2>
<div>The commander decides.</div>
<noscript>Enable JavaScript</noscript>
<footer>Copyright 2024</footer>
<script>console.log("x")</script>
</body></html>
"""


def test_html_drops_page_chrome_and_builds_heading_paths(tmp_path):
    (tmp_path / "runbook.html").write_text(HTML)
    doc = only(tmp_path / "runbook.html")
    assert doc.title == "Incident runbook"
    everything = " ".join(s.text for s in doc.sections)
    for dropped in ("analytics", "color", "Home", "Company header", "Copyright", "console", "JavaScript"):
        assert dropped not in everything
    paths = {s.heading_path: s.text for s in doc.sections}
    assert paths[("Incident response",)] == "Anyone may declare an incident."
    severity = paths[("Incident response", "Severity")]
    assert severity.startswith("SEV1 means the product is down.\n\nSEV2 means a feature is degraded.")
    assert "Page the commander\n\nOpen a channel" in severity
    assert "SEV1 | Login broken" in paths[("Incident response", "Severity", "Examples")]
    assert paths[("Incident response", "Roles")] == "The commander decides."


def test_an_articles_own_header_is_content_not_chrome(tmp_path):
    """CMS pages put the article's h1 in the article's <header>; only the page-level one is chrome."""
    (tmp_path / "post.html").write_text(
        "<html><head><title>Acme intranet</title></head><body><header><a>Acme</a> Intranet home</header><main>"
        "<article><header><h1>Expense policy</h1><p>Finance team</p></header>"
        "<p>Receipts are due within 30 days.</p><footer>Filed under finance</footer></article></main>"
        "<footer>Copyright Acme</footer></body></html>")
    doc = only(tmp_path / "post.html")
    paths = {s.heading_path: s.text for s in doc.sections}
    assert paths[("Expense policy",)].startswith("Finance team\n\nReceipts are due within 30 days.")
    everything = " ".join(s.text for s in doc.sections)
    assert "Filed under finance" in everything
    assert "Intranet home" not in everything and "Copyright Acme" not in everything


def test_html_headers_footers_form_fields_and_stray_cells_stand_apart_from_their_neighbours(tmp_path):
    """They were inline to the walk: "Posted on 1 May 2024Rotate keys every 90 days.Filed under security",
    "NameOpt AOpt BTA textSubmit"."""
    (tmp_path / "post.html").write_text(
        "<html><body><article><header>Posted on 1 May 2024</header>Rotate keys every 90 days."
        "<footer>Filed under security</footer></article>"
        "<form><hgroup>Sign up</hgroup><label>Name</label><input value='prefilled'><select><option>Opt A</option>"
        "<option>Opt B</option></select><textarea>TA text</textarea><button>Submit</button></form>"
        "<search>Find a policy</search><div><tr><td>Cell one</td><th>Cell two</th></tr></div></body></html>")
    [section] = only(tmp_path / "post.html").sections
    assert section.text.split("\n\n") == [
        "Posted on 1 May 2024", "Rotate keys every 90 days.", "Filed under security", "Sign up", "Name",
        "Opt A", "Opt B", "TA text", "Submit", "Find a policy", "Cell one", "Cell two"]


def test_html_table_captions_and_image_alt_text_are_kept(tmp_path):
    """Both were dropped (Markdown keeps an image's alt text). The caption is a paragraph of its own, so
    the rows stay a table of rows."""
    (tmp_path / "policy.html").write_text(
        "<h1>Policy</h1><p>See<img alt='Architecture diagram' src='a.png'>below.<img src='spacer.gif'></p>"
        "<table><caption>Retention periods for <b>customer</b> data</caption><tr><th>Data</th><th>Keep</th></tr>"
        "<tr><td>Invoices</td><td>7 years</td></tr><tr><td><img alt='Tickets'></td><td>3 years</td></tr></table>")
    [section] = only(tmp_path / "policy.html").sections
    assert section.text.split("\n\n") == [
        "See Architecture diagram below.", "Retention periods for customer data",
        "Data | Keep\nInvoices | 7 years\nTickets | 3 years"]


def test_html_title_falls_back_to_the_first_h1_then_the_stem(tmp_path):
    (tmp_path / "a.htm").write_text("<h1>First heading</h1><p>Text.</p>")
    assert only(tmp_path / "a.htm").title == "First heading"
    (tmp_path / "plain-page.html").write_text("<p>Text only.</p>")
    assert only(tmp_path / "plain-page.html").title == "plain-page"



def test_an_inline_svgs_title_does_not_name_the_page(tmp_path):
    """An icon's <title> (its tooltip) was taken for the page's when the head had none."""
    icon = '<svg viewBox="0 0 8 8"><title>Search icon</title><path d="M0 0h8"/></svg>'
    (tmp_path / "icons.html").write_text(f"<html><body>{icon}<h1>Real heading</h1><p>Body text.</p></body></html>")
    assert only(tmp_path / "icons.html").title == "Real heading"
    (tmp_path / "titled.html").write_text(f"<html><head>{icon}<title>Page title</title></head><body><p>Text.</p>"
                                          "</body></html>")
    assert only(tmp_path / "titled.html").title == "Page title"


@pytest.mark.parametrize("tag", ["div", "font color=red"])
def test_html_with_hundreds_of_unclosed_tags_is_read(tmp_path, tag):
    """An old page that never closes its tags nests them thousands deep in the parsed tree: a recursive
    walk hit Python's recursion limit and the page was lost."""
    lines = "".join(f"<p><{tag}>Line {i} of the old page." for i in range(1000))
    (tmp_path / "legacy.html").write_text(f"<html><body><h1>Archive</h1>{lines}</body></html>")
    [section] = only(tmp_path / "legacy.html").sections
    assert section.heading_path == ("Archive",)
    assert section.text.split("\n\n") == [f"Line {i} of the old page." for i in range(1000)]


# -- Markdown ------------------------------------------------------------------------------------


MARKDOWN = """---
title: "API keys and rotation"
team: platform
tags:
  - security
---
# API keys

Every service authenticates with an API key
sent as a bearer token.

## Rotating a key

Rotate keys every **90 days**.

- Create the successor
- Redeploy clients

```bash
unirank-keys rotate --grace 24h
```

| Scope | Meaning |
|-------|---------|
| admin | everything |

# Appendix

See also the `security` guide.
"""


def test_markdown_front_matter_headings_and_code(tmp_path):
    (tmp_path / "api-keys.md").write_text(MARKDOWN)
    doc = only(tmp_path / "api-keys.md")
    assert doc.title == "API keys and rotation"
    assert doc.metadata == {"team": "platform", "tags": ["security"]}  # title is the title; a list is kept
    paths = {s.heading_path: s.text for s in doc.sections}
    assert paths[("API keys",)] == "Every service authenticates with an API key sent as a bearer token."
    rotating = paths[("API keys", "Rotating a key")]
    assert rotating.startswith("Rotate keys every 90 days.\n\n")
    assert "- Create the successor\n- Redeploy clients" in rotating
    assert "unirank-keys rotate --grace 24h" in rotating
    assert "admin | everything" in rotating
    assert paths[("Appendix",)] == "See also the security guide."
    assert "---" not in " ".join(paths.values()) and "team:" not in " ".join(paths.values())


def test_markdown_front_matter_is_yaml(tmp_path):
    """It was read line by line: `tags: [alpha, beta]` became the text "[alpha, beta]", which no
    --filter tags=alpha could match."""
    (tmp_path / "runbook.md").write_text("---\ntags: [alpha, beta]\nreviewed: 2024-05-01\nversion: 2\n"
                                         "draft: false\nowner:\n  name: Ana\n---\n# Runbook\n\nSteps.\n")
    assert only(tmp_path / "runbook.md").metadata == {"tags": ["alpha", "beta"], "reviewed": "2024-05-01",
                                                       "version": 2, "draft": False}  # a nested map is left out
    (tmp_path / "broken.md").write_text("---\ntags: [alpha\n---\nThe body stays.\n")
    doc = only(tmp_path / "broken.md")
    assert doc.metadata == {} and doc.sections[0].text == "The body stays."


@pytest.mark.parametrize(("header", "title"), [
    ("title: [Keys, Rotation]", "Keys, Rotation"),
    ("title:\n  - Keys\n  - 2024", "Keys, 2024"),
    ("title: 2024", "2024"),
])
def test_a_front_matter_title_that_is_not_text_reads_as_text(tmp_path, header, title):
    """A list title became its Python repr, "['Keys', 'Rotation']"."""
    (tmp_path / "keys.md").write_text(f"---\n{header}\n---\nBody.\n")
    assert only(tmp_path / "keys.md").title == title


@pytest.mark.parametrize(("opening", "kept"), [
    ("This document explains key rotation.", "This document explains key rotation."),  # YAML: a string
    ("- Rotate keys\n- Revoke the old ones", "- Rotate keys\n- Revoke the old ones"),  # YAML: a list
    ("Note the rule: keys rotate: every 90 days.", "Note the rule: keys rotate: every 90 days."),  # not YAML
])
def test_a_markdown_file_opening_with_a_rule_keeps_its_text(tmp_path, opening, kept):
    """Text between two `---` rules at the top was taken for front matter whenever YAML could read it."""
    (tmp_path / "keys.md").write_text(f"---\n{opening}\n---\n\n# Details\n\nRotate every 90 days.\n")
    doc = only(tmp_path / "keys.md")
    assert doc.metadata == {} and doc.title == "Details"
    assert [(s.heading_path, s.text) for s in doc.sections] == [((), kept), (("Details",), "Rotate every 90 days.")]


def test_front_matter_times_and_timestamps_are_kept_as_written(tmp_path):
    """YAML 1.1 read `10:20` as the base-60 number 620, and a timestamp was stored as its isoformat():
    --filter time_only=10:20 and --filter "updated=2024-03-05 10:20:30" found nothing. An impossible
    date failed the whole file with a ValueError."""
    (tmp_path / "t.md").write_text("---\ntime_only: 10:20\nstart: 09:30\nlong: 190:20:30.15\n"
                                   "updated: 2024-03-05 10:20:30\nutc: 2024-03-05T10:20:30Z\nday: 2024-03-05\n"
                                   "leap: 2024-02-30\nversion: 2\nratio: 1.5\nhex: 0x1F\n---\nBody.\n")
    assert only(tmp_path / "t.md").metadata == {
        "time_only": "10:20", "start": "09:30", "long": "190:20:30.15", "updated": "2024-03-05 10:20:30",
        "utc": "2024-03-05T10:20:30Z", "day": "2024-03-05", "leap": "2024-02-30", "version": 2, "ratio": 1.5,
        "hex": 31}


def test_front_matter_with_a_yaml_mistake_is_still_taken_off(tmp_path):
    """Its lines are keys: a header that YAML refuses (an unquoted colon), not the document's opening."""
    (tmp_path / "keys.md").write_text("---\ntitle: Keys: how to rotate\nowner: ana\ntags:\n  - security\n---\n"
                                      "Rotate every 90 days.\n")
    doc = only(tmp_path / "keys.md")
    assert doc.metadata == {} and doc.title == "keys"
    assert [(s.heading_path, s.text) for s in doc.sections] == [((), "Rotate every 90 days.")]
    # The ingest report says so (its fields were lost without a word), naming the line.
    assert doc.warnings == ["front matter is not valid YAML (mapping values are not allowed here, on line 2): "
                            "none of its fields became metadata; fix it (a value that holds ': ' needs quotes)"]


def test_front_matter_ends_at_a_fence_in_column_0_only(tmp_path):
    """An indented `---` or `...` inside a block scalar ended the header there: the fields after it were
    lost, and what followed became a heading ("inside k: v")."""
    (tmp_path / "f.md").write_text("---\ntitle: A\ndesc: |\n  ---\n  inside\n  ...\nk: v\n---\nBody.\n")
    doc = only(tmp_path / "f.md")
    assert doc.title == "A" and doc.metadata == {"desc": "---\ninside\n...\n", "k": "v"}
    assert [(s.heading_path, s.text) for s in doc.sections] == [((), "Body.")]


def test_non_finite_front_matter_numbers_are_left_out_and_said(tmp_path):
    """YAML's .inf and .nan were stored, and `search --json` printed them as Infinity and NaN."""
    (tmp_path / "f.md").write_text("---\ninf: .inf\nnan: .NaN\nscores: [1, -.inf]\nquoted: '.inf'\n"
                                   "version: 2\n---\nBody.\n")
    doc = only(tmp_path / "f.md")
    assert doc.metadata == {"quoted": ".inf", "version": 2}
    assert doc.warnings == ["front matter fields inf, nan, scores left out: not a finite number (NaN or infinity, "
                            "such as 1e400 or YAML's .inf): no filter matches one, and strict JSON has no such "
                            "number; write the value as text (in quotes) to keep it"]


@contextmanager
def deadline(seconds: float):
    """A TimeoutError once ``seconds`` pass, so a parser that would run for ever fails its test instead."""
    def expire(signum, frame):
        raise TimeoutError(f"still parsing after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_front_matter_aliases_nesting_a_billion_items_are_left_out_at_once(tmp_path):
    """A 460-byte header of YAML aliases ("billion laughs": a list of 9 lists of 9 lists ... of "lol")
    hung the ingest: metadata_value walked every nested item. A list of lists is no metadata."""
    laughs = ['a0: &a0 [' + ", ".join(['"lol"'] * 9) + ']']
    laughs += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    (tmp_path / "bomb.md").write_text("---\n" + "\n".join(laughs) + "\ntitle: Bomb\n---\nBody text.\n")
    with deadline(seconds=3):
        doc = only(tmp_path / "bomb.md")
    assert doc.title == "Bomb" and doc.metadata == {"a0": ["lol"] * 9}
    assert [s.text for s in doc.sections] == ["Body text."]


def test_an_inline_html_line_break_in_markdown_parts_words(tmp_path):
    """markdown-it gives <br> as inline HTML, which was dropped: "First linesecond line", "openclose"."""
    (tmp_path / "steps.md").write_text("# Steps\n\nFirst line<br>second line and word<BR />joined.\n\n"
                                       "| Step | Notes |\n|---|---|\n| 1 | open<br/>close |\n")
    [section] = only(tmp_path / "steps.md").sections
    assert section.text == "First line second line and word joined.\n\nStep | Notes\n1 | open close"


def _nested_list(depth: int) -> str:
    return "".join("  " * level + f"- level {level}\n" for level in range(depth))


def test_deeply_nested_markdown_lists_and_quotes_keep_their_text(tmp_path):
    """commonmark's nesting limit (20, a list level counting two) silently left out the rest of the file
    after a list 10 levels deep, and the text of 25 nested quotes."""
    tail = "\n# Escalation\n\nPage the duty manager for SEV1 incidents.\n"
    (tmp_path / "outline.md").write_text("# Outline\n\n" + _nested_list(12) + tail)
    doc = only(tmp_path / "outline.md")
    paths = {s.heading_path: s.text for s in doc.sections}
    assert "level 11" in paths[("Outline",)]
    assert paths[("Escalation",)] == "Page the duty manager for SEV1 incidents."
    assert doc.warnings == []
    (tmp_path / "quotes.md").write_text(">" * 25 + " Quoted deep down.\n" + tail)
    assert [s.text for s in only(tmp_path / "quotes.md").sections] == [
        "Quoted deep down.", "Page the duty manager for SEV1 incidents."]


def test_markdown_nested_past_the_limit_is_said_and_never_exhausts_the_stack(tmp_path):
    """Past MAX_NESTING markdown-it still leaves text out, now with a warning naming the line; the limit
    stays low enough that its recursion (a few frames a level) never reaches Python's limit."""
    from unirank.ingest.parsers.markdown import MAX_NESTING

    (tmp_path / "deep.md").write_text("---\nteam: ops\n---\n# Deep\n\n" + _nested_list(300)
                                      + "\n" + "[" * 3000 + "x" + "]" * 3000 + "(u)\n")
    doc = only(tmp_path / "deep.md")
    assert "level 48" in doc.sections[0].text
    line = 6 + MAX_NESTING // 2 - 1  # the item at the limit's depth: 3 lines of front matter, 2 of heading
    assert doc.warnings == [f"a list or quote nested over {MAX_NESTING} levels deep on line {line} (a list level "
                            "counts two): the text inside it, and after a list the rest of the file, is left "
                            "out; nest it less"]
    (tmp_path / "all-deep.md").write_text("- " * 200 + "x\n")  # nothing above the limit: the error says why
    with pytest.raises(ParseError, match=r"no text found: a list or quote nested over \d+ levels deep on line 1"):
        parse_document((tmp_path / "all-deep.md").read_bytes(), "all-deep.md")


def test_markdown_ordered_lists_keep_their_numbers(tmp_path):
    """Every item became "- ", so "if step 2 fails" referred to nothing in the chunk. Numbers are the
    rendered ones: from the list's start, one up an item."""
    (tmp_path / "rotate.md").write_text(
        "# Rotate a key\n\n1. Open Settings.\n1. Click Rotate.\n   - Confirm\n\n   Wait for the banner.\n"
        "1. Copy the new key.\n\nIf step 2 fails, retry.\n\n7) Seventh\n8) Eighth\n\n- Bullet\n\n0. Zero\n1. One\n")
    [section] = only(tmp_path / "rotate.md").sections
    assert section.text == ("1. Open Settings.\n2. Click Rotate.\n- Confirm\nWait for the banner.\n"
                            "3. Copy the new key.\n\nIf step 2 fails, retry.\n\n7) Seventh\n8) Eighth\n\n- Bullet"
                            "\n\n0. Zero\n1. One")  # a list may start at 0


def test_code_blocks_keep_their_indentation_and_prose_does_not(tmp_path):
    """Every line was stripped: YAML's nesting was lost (two top-level `port` keys) and Python's blocks with
    it. Only code keeps its indentation and its inner space runs (aligned columns); prose collapses both."""
    (tmp_path / "config.md").write_text(
        "# Config\n\n   Indented   prose.\n\n```yaml\nserver:\n  port:  8080\n\n  hosts:\n\t- a  \n```\n\n"
        "- Then:\n\n  ```\n  if ready:\n      go()\n  ```\n\n"
        "Indented code:\n\n    def rotate(key):\n        return key\n\n## Empty\n\n```\n   \n```\n")
    doc = only(tmp_path / "config.md")
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (("Config",), "Indented prose.\n\nserver:\n  port:  8080\n\n  hosts:\n\t- a\n\n- Then:\nif ready:\n    go()"
                      "\n\nIndented code:\n\ndef rotate(key):\n    return key"),
        (("Config", "Empty"), "Empty")]  # a blank fence is no body
    (tmp_path / "code.html").write_text(
        "<h1>Rotate</h1><p>  Call   it:</p><pre>def rotate(key):\n    if key.expired:\n&nbsp;&nbsp;&nbsp;&nbsp;"
        "&nbsp;&nbsp;&nbsp;&nbsp;return renew(key)\n    return key</pre>")
    [section] = only(tmp_path / "code.html").sections
    assert section.text == ("Call it:\n\ndef rotate(key):\n    if key.expired:\n        return renew(key)\n"
                            "    return key")


def test_a_heading_with_no_body_is_its_own_text(tmp_path):
    """A document of headings only (an outline, an agenda) was refused as "no text found", and a last
    heading with nothing under it was dropped. A heading whose body is its sub-headings stays a path."""
    (tmp_path / "outline.md").write_text("# Outline\n\n## Goals\n\n## Risks\n\n### Budget\n\n## Timeline\n")
    doc = only(tmp_path / "outline.md")
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (("Outline", "Goals"), "Goals"), (("Outline", "Risks", "Budget"), "Budget"),
        (("Outline", "Timeline"), "Timeline")]
    (tmp_path / "faq.md").write_text("# FAQ\n\nAsk us.\n\n## Billing\n\nMonthly.\n\n## Open questions\n")
    assert [(s.heading_path, s.text) for s in only(tmp_path / "faq.md").sections] == [
        (("FAQ",), "Ask us."), (("FAQ", "Billing"), "Monthly."), (("FAQ", "Open questions"), "Open questions")]


def test_headings_with_no_body_in_html_and_docx_are_their_own_text(tmp_path):
    from docx import Document

    (tmp_path / "agenda.html").write_text("<html><body><h1>Agenda</h1><h2>Welcome</h2><p>Coffee.</p>"
                                          "<h2>Wrap-up</h2></body></html>")
    assert [(s.heading_path, s.text) for s in only(tmp_path / "agenda.html").sections] == [
        (("Agenda", "Welcome"), "Coffee."), (("Agenda", "Wrap-up"), "Wrap-up")]
    document = Document()
    document.add_heading("Quarterly plan", level=1)
    document.add_heading("Hire two engineers", level=2)
    document.add_heading("Ship the search API", level=2)
    document.save(str(tmp_path / "plan.docx"))
    assert [(s.heading_path, s.text) for s in only(tmp_path / "plan.docx").sections] == [
        (("Quarterly plan", "Hire two engineers"), "Hire two engineers"),
        (("Quarterly plan", "Ship the search API"), "Ship the search API")]


def test_markdown_title_falls_back_to_h1_then_stem(tmp_path):
    (tmp_path / "x.markdown").write_text("Intro.\n\n# Real title\n\nBody.")
    assert only(tmp_path / "x.markdown").title == "Real title"
    (tmp_path / "notes.md").write_text("Just notes.")
    assert only(tmp_path / "notes.md").title == "notes"


# -- plain text ----------------------------------------------------------------------------------


def test_text_keeps_paragraphs_and_collapses_spaces(tmp_path):
    (tmp_path / "onboarding.txt").write_text("First  day:\tlaptop.\r\n\r\n\r\n\nSecond   paragraph.\n")
    doc = only(tmp_path / "onboarding.txt")
    assert doc.title == "onboarding"
    assert [s.text for s in doc.sections] == ["First day: laptop.\n\nSecond paragraph."]


def test_text_in_latin_1_is_detected(tmp_path):
    text = ("Die Straße führt über die Brücke zum Schloß. Überall blühen Rosen, "
            "und die Bürger grüßen fröhlich. Café, Crème brûlée und Äpfel gibt es am Markt.")
    (tmp_path / "german.txt").write_bytes((text + "\n").encode("latin-1"))
    assert only(tmp_path / "german.txt").sections[0].text == text  # "Crème brûlée", not "Crčme brűlée"


@pytest.mark.parametrize("text", [
    "Travel policy: the team’s budget is €5,000 a quarter – approved. Don’t book “flexible” fares…",
    "It’s simple: rotate keys every 90 days.",
    "Qualità e velocità: è più facile così.",
    "Ação, coração e informação são importantes; você está lá?",
    "Smörgåsbord från Göteborg; Århus, Ærø og Øresund.",
])
def test_windows_1252_text_is_read_as_written(tmp_path, text):
    """The encoding English and Western European files have outside UTF-8. charset-normalizer alone read
    these as code page 852, Big5 or Windows-1250: "teamĺs", "It𠏋", "velocitŕ"."""
    (tmp_path / "legacy.txt").write_bytes(text.encode("cp1252"))
    assert only(tmp_path / "legacy.txt").sections[0].text == text


@pytest.mark.parametrize("encoding, text", [
    ("cp1251", "Ключи нужно менять регулярно. Сервер каждый день проверяет правила брандмауэра, а пароли "
                "пользователей нужно обновлять."),
    ("koi8_r", "Ключи нужно менять регулярно. Сервер каждый день проверяет правила брандмауэра, а пароли "
                "пользователей нужно обновлять."),
    ("cp1253", "Καλημέρα, αυτό είναι ελληνικό κείμενο για τα κλειδιά."),
    ("gb18030", "这是关于密钥轮换的中文文本。"),
    ("cp1250", "Zażółć gęślą jaźń, to jest polski tekst o kluczach."),
])
def test_text_that_is_not_western_is_still_detected(tmp_path, encoding, text):
    (tmp_path / "other.txt").write_bytes(text.encode(encoding))
    assert only(tmp_path / "other.txt").sections[0].text == text


def test_the_legacy_encoding_setting_reads_central_european_files(tmp_path):
    """Hungarian's ő and ű are Windows-1252's õ and û: only the setting can tell them apart."""
    text = "A kulcsok cseréje fontos feladat. Az őrző szerver naponta ellenőrzi a tűzfalat."
    data = text.encode("cp1250")
    assert parse_document(data, "hu.txt", legacy_encoding="cp1250")[0].sections[0].text == text
    assert "õrzõ" in parse_document(data, "hu.txt")[0].sections[0].text  # the Western default, as documented


def test_an_html_pages_declared_charset_outranks_a_guess():
    text = "A kulcsok cseréje fontos feladat. Az őrző szerver naponta ellenőrzi a tűzfalat."
    page = f'<html><head><meta charset="iso-8859-2"><title>Kulcsok</title></head><body><p>{text}</p></body></html>'
    assert parse_document(page.encode("iso-8859-2"), "hu.html")[0].sections[0].text == text
    # "Latin-1" on the web means Windows-1252, whose quotes and dashes Latin-1 lacks (WHATWG).
    quoted = "It’s “quoted” — and crème."
    page = f'<html><head><meta charset="iso-8859-1"></head><body><p>{quoted}</p></body></html>'
    assert parse_document(page.encode("cp1252"), "q.html")[0].sections[0].text == quoted
    # Valid UTF-8 wins over a stale declaration.
    page = f'<html><head><meta charset="iso-8859-2"></head><body><p>{quoted}</p></body></html>'
    assert parse_document(page.encode("utf-8"), "q.html")[0].sections[0].text == quoted


@pytest.mark.parametrize("charset", ["windows-1251", "koi8-r"])
def test_a_charset_declared_after_the_heads_first_kilobytes_is_read(charset):
    """bs4 looks at the first 2 KB only: a <meta charset> after a page's inline CSS was missed, and its
    Cyrillic text was indexed as mojibake ("Ïîëèòèêà"). Browsers read the whole head, and so do we."""
    css = "<style>" + "".join(f".c{i}{{color:#{i:06x};margin:0 auto;padding:1px}}\n" for i in range(70)) + "</style>"
    text = "Политика ротации ключей API"
    page = f'<html><head>{css}<meta charset="{charset}"><title>T</title></head><body><p>{text}</p></body></html>'
    assert len(css) > 2048
    assert parse_document(page.encode(charset), "late.html")[0].sections[0].text == text
    # Without </head>, the head ends where the body opens.
    page = page.replace("</head>", "")
    assert parse_document(page.encode(charset), "late.html")[0].sections[0].text == text


@pytest.mark.parametrize(("charset", "encoding", "text"), [
    ("utf-16", "cp1252", "Café crème, “quoted”."),  # no BOM: a single-byte page, read as UTF-16 it was CJK garbage
    ("iso-8859-9", "cp1254", "Şirket “politikası” 5 €."),  # Windows-1254's quotes and euro sign
    ("tis-620", "cp874", "ภาษาไทย “quoted” 5 €."),
    ("windows-874", "cp874", "ภาษาไทย “quoted” 5 €."),  # a web label Python has no codec of that name for
    ("shift_jis", "cp932", "東京～大阪①"),  # Windows-31J: its fullwidth tilde and circled digits
    ("euc-kr", "cp949", "Report 똠 v2."),  # a Hangul syllable only Windows-949 has
    ("gb2312", "gb18030", "Report 镕 v2."),  # a character GB2312 lacks
    ("gbk", "gb18030", "价格 5 €"),
])
def test_a_declared_charset_is_read_as_browsers_read_it(charset, encoding, text):
    """The WHATWG Encoding standard's meaning of a page's declared charset: a declared UTF-16 or UTF-32
    is UTF-8 (a real UTF-16 page has a byte-order mark), and a legacy label is its Windows superset."""
    page = f'<html><head><meta charset="{charset}"></head><body><p>{text}</p></body></html>'
    assert parse_document(page.encode(encoding), "page.html")[0].sections[0].text == text


def test_a_utf16_page_with_a_byte_order_mark_is_utf16_whatever_it_declares():
    page = '<html><head><meta charset="utf-16"></head><body><p>Café “quoted”.</p></body></html>'
    for encoding in ("utf-16", "utf-16-be"):
        data = page.encode(encoding) if encoding == "utf-16" else b"\xfe\xff" + page.encode(encoding)
        assert parse_document(data, "page.html")[0].sections[0].text == "Café “quoted”."


@pytest.mark.parametrize("charset", ["rot13", "hex", "base64", "zlib", "uu", "undefined", "no-such-charset"])
def test_a_declared_charset_that_reads_no_text_is_passed_over(charset):
    """Python's bytes-to-bytes codecs (hex, base64...) and "undefined" are no charsets: a page declaring
    one stopped the whole run with a LookupError or UnicodeError. The encoding is detected instead."""
    page = f'<html><head><meta charset="{charset}"></head><body><p>Caf\u00e9 cr\u00e8me</p></body></html>'
    assert parse_document(page.encode("cp1252"), "menu.html")[0].sections[0].text == "Café crème"


def test_a_legacy_encoding_that_reads_no_text_fails_the_file_not_the_run():
    """The setting refuses one (test_settings); handed to the parsers all the same, it is a ParseError."""
    with pytest.raises(ParseError, match="cannot parse: LookupError: 'hex' is not a text encoding"):
        parse_document("Café".encode("cp1252"), "menu.txt", legacy_encoding="hex")


FRENCH = "Le café est très bon. La crème brûlée était délicieuse à Paris. Naïve façade, résumé. " * 3
RUSSIAN = "Привет мир. Это документ о ротации ключей, который нужно прочитать целиком. " * 3


@pytest.mark.parametrize(("data", "expected"), [
    # A Windows-1252 apostrophe pasted into a UTF-8 file.
    (FRENCH.encode() + b"Don\x92t panic.", FRENCH + "Don\ufffdt panic."),
    (FRENCH.encode() + b"Stray \xff byte.", FRENCH + "Stray \ufffd byte."),
    # Cut off in the middle of a character (a size limit, an interrupted copy).
    ((RUSSIAN + "Ключ").encode()[:-1], RUSSIAN + "Клю"),
    (RUSSIAN.encode() + "Ключ".encode()[:1] + b" end.", RUSSIAN + "\ufffd end."),
])
def test_utf8_with_a_stray_byte_is_still_utf8(tmp_path, data, expected):
    """One bad byte sent the whole file to the legacy reading ("Le cafÃ©") or refused it as binary."""
    (tmp_path / "damaged.txt").write_bytes(data)
    assert only(tmp_path / "damaged.txt").sections[0].text == expected.strip()


def test_a_legacy_file_is_not_read_as_damaged_utf8(tmp_path):
    """Its accented letters are single bytes, none of them valid UTF-8: the legacy reading stays."""
    for text in ("Ça marche très bien.", "Meet me at the café"):
        (tmp_path / "latin.txt").write_bytes(text.encode("latin-1"))
        assert only(tmp_path / "latin.txt").sections[0].text == text


def test_utf8_with_bom_is_read(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffNaïve café".encode("utf-8"))
    assert only(tmp_path / "bom.txt").sections[0].text == "Naïve café"


# -- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_records_become_documents_with_scalar_and_list_metadata(tmp_path):
    records = [
        {"_id": "faq-1", "title": "Export", "text": "Admins can export data.", "category": "data",
         "votes": 12, "score": 0.5, "public": True, "nested": {"skip": 1}, "tags": ["x"]},
        {"_id": 2, "text": "Untitled answer."},
    ]
    lines = [json.dumps(r) for r in records]
    (tmp_path / "faq.jsonl").write_text(lines[0] + "\n\n" + lines[1] + "\n")
    docs = parse(tmp_path / "faq.jsonl")
    assert [d.doc_id for d in docs] == ["faq-1", "2"]
    assert docs[0].title == "Export" and docs[0].sections[0].text == "Admins can export data."
    assert docs[0].metadata == {"category": "data", "votes": 12, "score": 0.5, "public": True, "tags": ["x"]}
    assert docs[1].title == "" and docs[1].metadata == {}


def test_a_jsonl_record_without_a_title_is_not_titled_after_the_file(tmp_path):
    """Each record of corpus.jsonl was titled "corpus": the word went before every record's text, so a
    search for it found them all. The file's name titles a file of one document only."""
    records = [{"_id": "q1", "title": "", "text": "Rotate API keys every ninety days."},
               {"_id": "q2", "text": "Backups run nightly at two."}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [d.title for d in parse(tmp_path / "corpus.jsonl")] == ["", ""]
    (tmp_path / "corpus.txt").write_text("Rotate API keys every ninety days.")
    assert only(tmp_path / "corpus.txt").title == "corpus"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"_id": "x"}', "text"),
        ('{"text": "no id"}', "_id"),
        ("[1, 2]", "object"),
        ('{"_id": "c", "text": "t", "score": NaN}', "NaN is not a JSON value"),  # it broke strict JSON output
        # An _id that is no string or integer was stored as its Python repr, and 1e2 as "100.0".
        ('{"_id": {"a": 1}, "text": "t"}', 'must be a string or an integer, got {"a": 1}'),
        ('{"_id": [1, 2], "text": "t"}', r"must be a string or an integer, got \[1, 2\]"),
        ('{"_id": true, "text": "t"}', "must be a string or an integer, got true"),
        ('{"_id": 1e2, "text": "t"}', "must be a string or an integer, got 100.0"),
    ],
)
def test_a_bad_jsonl_line_fails_the_file_naming_the_line(tmp_path, bad_line, reason):
    good = json.dumps({"_id": "a", "text": "Fine."})
    (tmp_path / "corpus.jsonl").write_text(f"{good}\n{good.replace('a', 'b')}\n{bad_line}\n")
    with pytest.raises(ParseError, match=f"line 3.*{reason}"):
        parse(tmp_path / "corpus.jsonl")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_jsonl_text_may_hold_unicode_line_separators(tmp_path, separator):
    """JSON allows them raw inside a string, and json.dumps(ensure_ascii=False) writes them so, but
    splitlines() split the record there and the whole file failed as 'not valid JSON'."""
    records = [{"_id": "a", "text": f"First line{separator}second line."}, {"_id": "b", "text": "Fine."}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    (tmp_path / "corpus.jsonl").write_text(f"{lines[0]}\r\n{lines[1]}\r\n", encoding="utf-8", newline="")
    docs = parse(tmp_path / "corpus.jsonl")
    assert [(d.doc_id, d.sections[0].text) for d in docs] == [("a", f"First line{separator}second line."),
                                                              ("b", "Fine.")]


def test_jsonl_records_with_neither_text_nor_title_are_left_out_and_said(tmp_path):
    """They were dropped without a word: the report counted the file as ingested whole."""
    records = [{"_id": "a", "text": "Fine."}, {"_id": "b", "text": " "}, {"_id": "c", "text": "", "title": "Only"},
               {"_id": "d", "text": "", "title": ""}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    docs = parse(tmp_path / "corpus.jsonl")
    assert [d.doc_id for d in docs] == ["a", "c"]
    assert docs[0].warnings == ["2 records with neither text nor title left out (lines 2, 4)"]
    (tmp_path / "blank.jsonl").write_text(json.dumps({"_id": "x", "text": ""}) + "\n")
    with pytest.raises(ParseError, match="no text found"):
        parse(tmp_path / "blank.jsonl")


def test_non_finite_jsonl_numbers_are_left_out_of_metadata_and_said(tmp_path):
    """1e400 overflows to infinity: it was stored, and `search --json` printed Infinity, which strict JSON
    readers refuse (the literals NaN and Infinity already fail the file)."""
    records = ['{"_id": "a", "text": "Quokkas.", "score": 1e400, "neg": -1e999, "votes": 3}',
               '{"_id": "b", "text": "Wombats.", "score": 0.5}', '{"_id": "c", "text": "Koalas.", "score": 2e308}']
    (tmp_path / "c.jsonl").write_text("\n".join(records) + "\n")
    docs = parse(tmp_path / "c.jsonl")
    assert [d.metadata for d in docs] == [{"votes": 3}, {"score": 0.5}, {}]
    assert [w.split(": not a finite number")[0] for w in docs[0].warnings] == [
        "field score left out of 2 records (lines 1, 3)", "field neg left out of 1 record (line 1)"]
    assert "write the value as text (in quotes) to keep it" in docs[0].warnings[0]


def test_a_duplicate_jsonl_id_fails_the_file(tmp_path):
    good = json.dumps({"_id": "a", "text": "Fine."})
    (tmp_path / "dup.jsonl").write_text(f"{good}\n{good}\n")
    with pytest.raises(ParseError, match="line 2: duplicate _id 'a'"):
        parse(tmp_path / "dup.jsonl")


# -- shared rules --------------------------------------------------------------------------------


def test_empty_and_blank_files_are_refused(tmp_path):
    for name in ("empty.txt", "empty.pdf", "blank.md"):
        (tmp_path / name).write_bytes(b"" if name.startswith("empty") else b"  \n\n ")
        with pytest.raises(ParseError, match="empty file"):
            parse(tmp_path / name)


@pytest.mark.parametrize("invisible", ["\u200b", "\u200d\ufeff", "\u2060\u00ad"])
def test_a_file_of_only_invisible_characters_has_no_text(tmp_path, invisible):
    """A zero-width space passed str.strip(): the file was indexed, and only its name was embedded."""
    (tmp_path / "zw.txt").write_text(f"{invisible}{invisible}\n{invisible}\n")
    with pytest.raises(ParseError, match="no text found"):
        parse(tmp_path / "zw.txt")


def test_a_jsonl_record_of_only_invisible_characters_is_left_out_and_said(tmp_path):
    """The record was indexed as a chunk of one zero-width space, which kNN answered with noise."""
    records = [{"_id": "1", "text": "\u200b"}, {"_id": "2", "text": "ok"}, {"_id": "3", "text": "\u200b \u200b"},
               {"_id": "4", "title": "Key rotation", "text": "\u200b"}]  # indexed by its title, as with " "
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    docs = parse(tmp_path / "r.jsonl")
    assert [(d.doc_id, d.sections[0].text) for d in docs] == [("2", "ok"), ("4", "Key rotation")]
    assert docs[0].warnings == ["2 records with neither text nor title left out (lines 1, 3)"]
    (tmp_path / "zw.jsonl").write_text(json.dumps({"_id": "x", "text": "\u200b"}) + "\n")
    with pytest.raises(ParseError, match="no text found"):
        parse(tmp_path / "zw.jsonl")


def test_a_file_with_only_markup_has_no_text(tmp_path):
    (tmp_path / "chrome.html").write_text("<html><head><title>T</title></head><body><nav>x</nav></body>")
    with pytest.raises(ParseError, match="no text found"):
        parse(tmp_path / "chrome.html")


ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8
NO_NUL = random.Random(3).randbytes(4096).replace(b"\x00", b"\x01")  # binary that never has a NUL
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(5).randbytes(6000)  # compressed pixels
UTF16_NO_BOM = "Keys are rotated every ninety days.\n".encode("utf-16-le") * 50  # byte order unknown


@pytest.mark.parametrize(
    ("name", "data"),
    [("firmware.txt", ELF), ("image.md", ELF), ("blob.html", ELF), ("data.jsonl", ELF), ("noise.txt", NO_NUL),
     ("photo.txt", PNG), ("utf16.txt", UTF16_NO_BOM)],
)
def test_binary_content_with_a_text_extension_is_refused(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ParseError, match="binary content, not text"):
        parse(tmp_path / name)


@pytest.mark.parametrize("name", ["server.txt", "server.md"])
def test_a_stray_nul_byte_does_not_make_a_log_binary(tmp_path, name):
    """A log cut mid-write: one NUL in 9 KB of text is damage to drop, not a sign of a binary file."""
    lines = [f"2024-05-0{1 + i % 9} 12:00:{i % 60:02d} INFO request {i} served in {i % 7} ms" for i in range(180)]
    data = "\n".join(lines).encode("utf-8")
    assert len(data) > 9000
    (tmp_path / name).write_bytes(data.replace(b"request 80 ", b"request 80\x00 ", 1))
    text = "\n\n".join(s.text for s in parse(tmp_path / name)[0].sections)
    assert "\x00" not in text
    assert "request 80 served in 3 ms" in text and lines[-1] in text


def test_an_unsupported_extension_lists_the_supported_ones(tmp_path):
    (tmp_path / "setup.exe").write_bytes(b"MZ\x90\x00")
    with pytest.raises(UnsupportedFormatError, match=r"unsupported file type '\.exe'; supported: .*\.pdf"):
        parse(tmp_path / "setup.exe")
    with pytest.raises(UnsupportedFormatError):
        parser_for("s3://bucket/README")


def test_parsers_are_chosen_by_lower_cased_extension():
    expected = {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".text", ".jsonl"}
    assert SUPPORTED_EXTENSIONS == expected
    assert parser_for("s3://bucket/Report.PDF").extensions == (".pdf",)
    assert parser_for("file:///tmp/notes.Md").extensions == (".md", ".markdown")


@pytest.mark.parametrize(
    ("uri", "stem"),
    [
        ("file:///abs/path/white%20paper.pdf", "white paper"),
        ("s3://bucket/key/x.pdf", "x"),
        ("oss://bucket/deep/dir/report.final.docx", "report.final"),
        ("/plain/path/notes.md", "notes"),
    ],
)
def test_the_file_stem_comes_from_any_uri(uri, stem):
    assert stem_from_uri(uri) == stem


def test_object_storage_uris_parse_like_files():
    doc = parse_document(b"Hello from a bucket.", "s3://bucket/team/readme.txt")[0]
    assert doc.doc_id == "s3://bucket/team/readme.txt" and doc.title == "readme"


# -- examples/make_office_docs.py ----------------------------------------------------------------


def test_the_office_samples_are_the_same_bytes_on_every_run(tmp_path, monkeypatch):
    """scripts/quickstart.sh makes the samples before each ingest, and the DOCX's zip entry times and the PDF's
    creation date (and the file ID made from it) were those of the run: a re-ingest re-read both as changed.
    They are fixed, and a file that holds the bytes already is not written again, so its mtime stays."""
    import importlib.util
    import os
    import time
    import types
    import zipfile
    from datetime import datetime, timezone

    from fpdf import FPDF

    script = Path(__file__).resolve().parents[1] / "examples" / "make_office_docs.py"
    spec = importlib.util.spec_from_file_location("make_office_docs", script)
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    names = ("travel-policy.docx", "security-whitepaper.pdf")
    made = FPDF.__init__

    def run(folder: Path, clock: float) -> None:  # as if at `clock`: zip entries and a PDF take the run's time
        def at_clock(pdf, *args, **kwargs):
            made(pdf, *args, **kwargs)
            pdf.creation_date = datetime.fromtimestamp(clock, timezone.utc)

        monkeypatch.setattr(zipfile, "time", types.SimpleNamespace(time=lambda: clock, localtime=time.localtime))
        monkeypatch.setattr(FPDF, "__init__", at_clock)
        folder.mkdir(exist_ok=True)
        make.make_docx(folder / names[0])
        make.make_pdf(folder / names[1])

    run(tmp_path / "a", 1_700_000_000)
    run(tmp_path / "b", 1_700_003_600)
    assert [name for name in names if (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()] == []
    for name in names:
        os.utime(tmp_path / "a" / name, ns=(10**18, 10**18))
    run(tmp_path / "a", 1_700_007_200)
    assert [(tmp_path / "a" / name).stat().st_mtime_ns for name in names] == [10**18, 10**18]
    monkeypatch.undo()
    assert only(tmp_path / "a" / names[0]).title == "Travel and expenses policy"
    assert only(tmp_path / "a" / names[1]).title == "Security whitepaper"
