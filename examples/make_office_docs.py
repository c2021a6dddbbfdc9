"""Generate the PDF and DOCX samples (binary formats are made, not committed)."""

from __future__ import annotations

import sys
from pathlib import Path

from docx import Document
from fpdf import FPDF


def make_docx(path: Path) -> None:
    doc = Document()
    doc.core_properties.title = "Travel and expenses policy"
    doc.add_heading("Travel and expenses policy", level=0)
    doc.add_heading("Booking travel", level=1)
    doc.add_paragraph("Book flights and hotels through the travel portal at least 14 days ahead. "
                      "Economy class is the default for flights under six hours.")
    doc.add_heading("Claiming expenses", level=1)
    doc.add_paragraph("Submit receipts within 30 days of the trip. Meals are reimbursed up to 60 euros per day.")
    doc.add_heading("Approvals", level=2)
    doc.add_paragraph("Trips outside the European Union need approval from a director.")
    doc.save(str(path))


def make_pdf(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title("Security whitepaper")
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
    pdf.output(str(path))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    make_docx(out / "travel-policy.docx")
    make_pdf(out / "security-whitepaper.pdf")
