"""Follow-up questions in a conversation: does the rewritten query stay on the subject the user means?

On the sample handbook (``examples/sample-docs``, in the repo: no shared data needed), 16 two-turn
conversations: a first question, then a follow-up that either points back ("How often should I do
it?") or names a new subject ("What about SEV2?", "What about Kubernetes?", which the documents
lack). Each is asked through ``ChatService`` with the offline answerer and history, and scored by
whether the answer's first citation is the source the follow-up is about (or, for a subject the
documents lack, whether it is answered "not covered" rather than about the old topic).

**Baseline** in the same run, on the same conversations: the rewrite that carries all the earlier
question's key terms (``QueryRewriter.heuristic`` without the index's passages, unirank's rewrite
until 2026-12), with the same retrieval and answerer. Also printed: the time the rewrite takes.

    .venv/bin/python bench/chat_follow_ups.py    # ~30 s on 2 quiet cores; ~4 min at load average 3.4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "chat_follow_ups"
SAMPLE_DOCS = C.PROJECT_ROOT / "examples" / "sample-docs"

#: (first question, follow-up, the source the follow-up is about; None: a subject the documents lack).
CONVERSATIONS = [
    ("How do I rotate an API key?", "How often should I do it?", "api-keys"),
    ("How do I create an API key?", "What about rotating it?", "api-keys"),
    ("How often are backups taken?", "And how long are they kept?", "backups"),
    ("What does SEV1 mean?", "And SEV3?", "incident-response"),
    ("How much does the team plan cost?", "What about the enterprise plan?", "pricing"),
    ("What is the recovery point objective?", "What about the recovery time objective?", "backups"),
    ("Who updates the status page during an outage?", "What about SEV1?", "incident-response"),
    ("How do I rotate an API key?", "What about SEV2?", "incident-response"),
    ("How long do old API keys keep working after rotation?", "what about SEV2", "incident-response"),
    ("How often are backups taken?", "What about the rate limit?", "api-keys"),
    ("What should I do on my first day?", "What about pricing?", "pricing"),
    ("How do I reset my password?", "What about SSO?", "faq"),
    ("How much does the team plan cost?", "What about the post-mortem?", "incident-response"),
    ("Who updates the status page during an outage?", "How about onboarding?", "onboarding"),
    ("How do I rotate an API key?", "What about Kubernetes?", None),
    ("How often are backups taken?", "What about the office coffee machine?", None),
]


def on_subject(answer, want: str | None) -> bool:
    if want is None:
        return not answer.grounded
    return bool(answer.citations) and want in answer.citations[0].uri


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options of its own
    from unirank.api import Unirank
    from unirank.chat.service import ChatService
    from unirank.chat.types import Turn

    C.warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="unirank-bench-") as tmp:
        ur = Unirank(C.isolated_settings(Path(tmp) / "data"))
        assert not ur.ingest(str(SAMPLE_DOCS), "handbook").failed
        ours, carried_whole = ChatService(ur), ChatService(ur)
        # The baseline: the same rewriter, never shown the index's passages.
        carried_whole.__dict__["rewriter"] = _WithoutPassages()
        rows, scores, rewrite_ms = [], {"baseline": 0, "ours": 0}, {"baseline": [], "ours": []}
        for first, follow_up, want in CONVERSATIONS:
            opening = ours.ask(first, "handbook")
            history = [Turn("user", first, query=opening.query), Turn("assistant", opening.answer)]
            row = [follow_up]
            for label, chat in (("baseline", carried_whole), ("ours", ours)):
                answer = chat.ask(follow_up, "handbook", history=history)
                hit = on_subject(answer, want)
                scores[label] += hit
                rewrite_ms[label].append(answer.timings_ms["rewrite"])
                where = answer.citations[0].uri.rsplit("/", 1)[-1] if answer.grounded else "not covered"
                row += [answer.query, f"{'ok' if hit else 'WRONG'}: {where}"]
            rows.append(row)
        ur.close()

    print(C.table(["follow-up", "baseline query", "baseline answer", "unirank query", "unirank answer"], rows))
    n = len(CONVERSATIONS)
    print(f"\non the follow-up's subject: baseline (earlier terms carried whole) {scores['baseline']}/{n}, "
          f"unirank {scores['ours']}/{n}")
    p50 = {k: C.percentile(v, 50) for k, v in rewrite_ms.items()}
    print(f"rewrite time p50: baseline {p50['baseline']:.2f} ms, unirank {p50['ours']:.2f} ms "
          "(one BM25 search for a follow-up that names a new subject)")
    C.write_json(NAME, {
        "conversations": n,
        "on_subject": scores,
        "rewrite_ms_p50": p50,
        "rows": [dict(zip(["follow_up", "baseline_query", "baseline", "query", "ours"], r)) for r in rows],
    })


class _WithoutPassages:
    """The rewrite before passages were consulted: every earlier key term carried."""

    def __init__(self) -> None:
        from unirank.chat.rewrite import QueryRewriter

        self.inner = QueryRewriter()

    def rewrite(self, question, history, related=None):  # noqa: ARG002 - the point is to ignore it
        return self.inner.rewrite(question, history)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
