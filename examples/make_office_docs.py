"""Generate the PDF and DOCX samples (binary formats are made, not committed).

The files are the same byte for byte on every run (fixed dates), and one that already holds those bytes is
left as it is: scripts/quickstart.sh runs this before each ingest, and files written anew (a PDF's creation
date, a DOCX's zip entry times) were re-read as changed on every re-ingest.
"""

from __future__ import annotations

import io
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from docx import Document
from fpdf import FPDF

#: The date the samples say they were made and changed.
MADE = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless it holds exactly that already (its mtime then stays, and ingest skips it)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.write_bytes(data)


def _fixed_zip_times(data: bytes) -> bytes:
    """The zip ``data`` with every entry dated MADE: python-docx dates each entry with the time it is saved."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as copy:
        for entry in source.infolist():
            fixed = zipfile.ZipInfo(entry.filename, date_time=MADE.timetuple()[:6])
            fixed.compress_type, fixed.external_attr = entry.compress_type, entry.external_attr
            copy.writestr(fixed, source.read(entry))
    return out.getvalue()


def make_docx(path: Path) -> None:
    doc = Document()
    doc.core_properties.title = "Travel and expenses policy"
    doc.core_properties.created = doc.core_properties.modified = MADE.replace(tzinfo=None)
    doc.add_heading("Travel and expenses policy", level=0)
    doc.add_heading("Booking travel", level=1)
    doc.add_paragraph("Book flights and hotels through the travel portal at least 14 days ahead. "
                      "Economy class is the default for flights under six hours.")
    doc.add_heading("Claiming expenses", level=1)
    doc.add_paragraph("Submit receipts within 30 days of the trip. Meals are reimbursed up to 60 euros per day.")
    doc.add_heading("Approvals", level=2)
    doc.add_paragraph("Trips outside the European Union need approval from a director.")
    saved = io.BytesIO()
    doc.save(saved)
    _write(path, _fixed_zip_times(saved.getvalue()))


def make_pdf(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title("Security whitepaper")
    pdf.set_creation_date(MADE)  # otherwise now, and the file ID is derived from it
    pdf.set_font("Helvetica", size=11)
    pages = [
        "Security whitepaper. All data is encrypted at rest with AES-256 and in transit with TLS 1.3. "
        "Encryption keys are held in a hardware security module and rotated yearly.",
        "Access control. Engineers reach production only through a bastion host with short-lived "
        "certificates. Every access is logged and reviewed weekly by the security team.",
    ]
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    _write(path, bytes(pdf.output()))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    make_docx(out / "travel-policy.docx")
    make_pdf(out / "security-whitepaper.pdf")
