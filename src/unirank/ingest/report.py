"""What an ingest run did, file by file, for the summary the user reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestReport:
    source: str
    index: str
    files_seen: int = 0
    ingested: list[str] = field(default_factory=list)
    #: (uri, reason): unchanged since the last run, or a type unirank does not read.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (uri, reason): the file could not be read or parsed; the run went on without it.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Unchanged files read again: ingested with other chunk or encoding settings, or older parsers.
    reread: list[str] = field(default_factory=list)
    #: Sources removed by --prune: gone from the source since they were ingested.
    pruned: list[str] = field(default_factory=list)
    chunks_written: int = 0
    chunks_removed: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Why the run stopped partway (an endpoint or model that failed); what it committed stays, and
    #: the same run again finishes the rest.
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None

    def to_dict(self) -> dict:
        """The counts ("ingested", "pruned", ...) stay counts, as scripts read them; the sources are listed
        under their own keys."""
        return {
            "source": self.source,
            "index": self.index,
            "files_seen": self.files_seen,
            "ingested": len(self.ingested),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "reread": len(self.reread),
            "pruned": len(self.pruned),
            "chunks_written": self.chunks_written,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
            "failures": [{"uri": u, "reason": r} for u, r in self.failed],
            "skips": [{"uri": u, "reason": r} for u, r in self.skipped],
            "pruned_sources": list(self.pruned),
            "warnings": self.warnings,
            "stopped": self.stopped,
        }


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest, after what was committed was flushed: ``report`` says what that was, and
    the same run again finishes the rest. A KeyboardInterrupt still, for callers that stop on one."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"{len(report.ingested)} files committed")
        self.report = report
