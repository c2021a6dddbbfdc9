"""``unirank train`` and ``unirank eval``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from unirank.api import Unirank
from unirank.cli.context import client, load_settings
from unirank.cli.output import console, fail, print_json, print_stage
from unirank.errors import UnirankError
from unirank.training.centering import DEFAULT_WHITENING

if TYPE_CHECKING:  # imported where a run starts: the models' libraries load with it
    from unirank.training.job import TrainResult


def train(
    name: Annotated[str, typer.Option("--name", help="Registers NAME-embed and NAME-rerank.")],
    index: Annotated[Optional[str], typer.Option(help="Train on this index's chunks.")] = None,
    beir: Annotated[Optional[Path], typer.Option(help="Train on a BEIR folder's corpus (indexed first).")] = None,
    pairs: Annotated[Optional[Path], typer.Option(
        help="Labelled pairs: JSONL {query, positive[, negative]} (texts; a line with a number or list there is "
             "refused) or TSV query<TAB>positive[<TAB>negative] (cells as written: no CSV quoting). A negative equal to its positive is left out, "
             "with a warning counting them.")] = None,
    qrels: Annotated[Optional[Path], typer.Option(help="Qrels TSV of training queries (labels).")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="Query texts for --qrels (default: the BEIR folder's).")] = None,
    base: Annotated[str, typer.Option(help="Base model: `base`, a folder, or a registry ref.")] = "base",
    pseudo: Annotated[Optional[bool], typer.Option("--pseudo/--no-pseudo", help="Add pseudo-queries (default: only without labels).")] = None,
    pseudo_kinds: Annotated[Optional[str], typer.Option(
        help="Comma-separated pseudo-query kinds of crop, keyphrase, title, lead, llm (default: lead,keyphrase,title). "
             "llm: questions written by the OpenAI-compatible endpoint in chat.llm_base_url / chat.llm_model.")] = None,
    feedback: Annotated[bool, typer.Option("--feedback", help="Add chat feedback (thumbs up/down, citation clicks) as labelled pairs.")] = False,
    clicks: Annotated[Optional[Path], typer.Option(
        help="A search click log: JSONL {query, shown: \\[id, ...], clicked: \\[id | {id, dwell_s}, ...]} per result page; "
             "clicks are positives, results skipped above a click negatives.")] = None,
    min_dwell: Annotated[float, typer.Option(
        help="Seconds: a click whose user came back sooner is a bounce, not a positive (clicks without dwell_s count).")] = 0.0,
    epochs: Annotated[float, typer.Option(help="Epochs for both models.")] = 1.0,
    min_steps: Annotated[int, typer.Option(
        help="The embedder trains at least this many steps, adding epochs on small data (0: exactly --epochs).")] = 80,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    seed: Annotated[int, typer.Option(help="Seeds the pseudo-query sample, the validation split and the training order.")] = 13,
    bf16: Annotated[bool, typer.Option(
        "--bf16", help="Train both models in bf16 mixed precision: ~1.5x faster on CPUs with AMX or AVX512-BF16.")] = False,
    reranker_layers: Annotated[Optional[int], typer.Option(
        help="Keep only the base's first N layers in the reranker: 3 of all-MiniLM-L6-v2's 6 rerank in half the "
             "time (see README, Training).")] = None,
    center: Annotated[bool, typer.Option(
        "--center/--no-center", help="Centre the base embedder on the corpus (its mean vector taken away) before "
                                     "training; needs a local bi-encoder base and 100+ passages.")] = True,
    whiten: Annotated[float, typer.Option(
        help="With --center, how far to even out the corpus's main directions: 0 centres only, 0.5 whitens fully; "
             "needs 2 passages a dimension.")] = DEFAULT_WHITENING,
    fresh: Annotated[bool, typer.Option(help="Start over instead of resuming this run.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered versions and figures as JSON.")] = False,
) -> None:
    """Fine-tune an embedder and a cross-encoder reranker, and register both."""
    from unirank.training.embedder_trainer import EmbedderTrainingConfig
    from unirank.training.job import TrainJob, TrainRequest
    from unirank.training.pseudo_queries import DEFAULT_KINDS
    from unirank.training.reranker_trainer import RerankerTrainingConfig

    settings = load_settings()
    kinds = DEFAULT_KINDS if pseudo_kinds is None else tuple(k.strip() for k in pseudo_kinds.split(",") if k.strip())
    try:  # a setting this machine cannot honour (e.g. --bf16 without bf16 units) is refused here
        request = TrainRequest(
            name=name, index=index, beir=beir, pairs=pairs, qrels=qrels, queries=queries, base=base, pseudo=pseudo, pseudo_kinds=kinds,
            seed=seed, fresh=fresh, feedback=settings.chat_db_path if feedback else None, clicks=clicks,
            min_dwell_s=min_dwell,
            embedder=EmbedderTrainingConfig(epochs=epochs, batch_size=batch_size, seed=seed, min_steps=min_steps,
                                            bf16=bf16, center_on_corpus=center,
                                            whitening_strength=whiten),
            reranker=RerankerTrainingConfig(epochs=epochs, batch_size=batch_size, seed=seed, bf16=bf16,
                                            layers=reranker_layers),
        )
    except UnirankError as exc:
        fail(exc)
    # The trainers print their logs to stdout; stdout is kept for the result (and --json).
    with Unirank(settings) as ur, contextlib.redirect_stdout(sys.stderr):
        job = None
        try:
            job = TrainJob(ur.settings, ur.backend, lambda: ur.embedder, request, stage=print_stage)
            result = job.run()
        except UnirankError as exc:
            fail(exc)
        except KeyboardInterrupt:
            _interrupted(job, fresh)
    summary = {"run_dir": str(result.run_dir), "embedder": result.embedder.ref, "reranker": result.reranker.ref,
               # both versions were an earlier run's (nothing new registered): the text's "This run had registered"
               "registered_before": result.registered_before,
               # each one's: one reused beside one registered now was said as neither (or as both registered)
               "embedder_registered_before": result.embedder_registered_before,
               "reranker_registered_before": result.reranker_registered_before,
               "data": result.stats, "validation": result.metrics}
    if as_json:
        print_json(summary)
        return
    console.print(registered_line(result))
    console.print(escape(validation_summary(result.metrics)), soft_wrap=True)
    where = f"--beir {beir}" if beir else f"--index {index} --queries HELD_OUT_QUERIES --qrels HELD_OUT_QRELS"
    # Both: `--models NAME@prod` (eval, serving) names the pair, and refused a reranker not promoted too.
    steps = [f"unirank eval {where} --models base,{name}", f"unirank models promote {result.embedder.ref} --alias prod",
             f"unirank models promote {result.reranker.ref} --alias prod"]
    if index:
        steps.append(f"unirank index rebuild {index} --model {name}-embed@prod   (its searches then use it)")
    console.print("Next:\n" + "\n".join(f"  {escape(step)}" for step in steps), soft_wrap=True)


def registered_line(result: TrainResult) -> str:
    """What the run registered, as console markup: one version reused from an earlier run of the command
    (its partner deleted since) was said to be "Registered" with the new one."""
    embedder, reranker = f"[bold]{result.embedder.ref}[/bold]", f"[bold]{result.reranker.ref}[/bold]"
    run_folder = f"run folder {escape(str(result.run_dir))}"
    if result.registered_before:  # not a second time
        return f"This run had registered {embedder} and {reranker} ({run_folder}; --fresh trains again)."
    if result.embedder_registered_before:
        return f"Registered {reranker}; {embedder} (registered by this run before) is reused ({run_folder})."
    if result.reranker_registered_before:
        return f"Registered {embedder}; {reranker} (registered by this run before) is reused ({run_folder})."
    return f"Registered {embedder} and {reranker} ({run_folder})."


def validation_summary(metrics: dict) -> str:
    """Base and trained figures on the run's validation split, and what that split is: it printed the
    trained nDCG@10 alone, on a few pseudo-queries, with nothing to compare it with."""
    lines = []
    for role in ("embedder", "reranker"):
        figures = metrics.get(role) or {}
        base = figures.get("base") or {}
        names = (("ndcg@10", "nDCG@10"), ("recall@10", "Recall@10"), ("mrr@10", "MRR@10"))
        parts = [f"{label} {base[key]:.4f} -> {figures[key]:.4f}" if key in base else f"{label} {figures[key]:.4f}"
                 for key, label in names if key in figures]
        line = f"  {role}: " + ", ".join(parts)
        if "selection_ndcg@10" in figures:
            line += (f" (at {figures.get('max_length')} tokens, as it serves; the checkpoint was chosen at "
                     f"{figures.get('selection_length')} tokens, nDCG@10 {figures['selection_ndcg@10']:.4f})")
        lines.append(line)
    embedder = metrics.get("embedder") or {}
    count, people = embedder.get("validation_queries"), embedder.get("validation_written_by_people", 0)
    if count is None:
        what = "the run's validation queries"
    elif people == 0:
        what = f"{count} pseudo-queries held out from training"
    else:
        what = f"{count} validation queries held out from training ({people} written by people)"
    head = f"Validation, base -> trained, on {what}:"
    trust = ("These favour the tuned models (pseudo-queries come from the generator they trained on); "
             "`unirank eval` on real held-out queries is the figure to trust." if people == 0 else
             "`unirank eval` on real held-out queries is the figure to trust.")
    return "\n".join([head, *lines, trust])


def _interrupted(job, fresh: bool) -> None:
    """Ctrl-C: say that the same command resumes (it exited 130 without a word), and exit 130 as before."""
    run_dir = job.__dict__.get("run_dir") if job is not None else None  # set once the run began
    again = "the same command without --fresh" if fresh else "the same command"
    finished = _finished_stages(run_dir) if run_dir is not None and run_dir.exists() else []
    if finished:
        message = (f"Interrupted. Finished stages ({', '.join(finished)}) are kept in {run_dir}: {again} resumes "
                   "after the last finished one (a training stage from its last checkpoint).")
    elif run_dir is not None and run_dir.exists():  # it said "Finished stages are kept" when none had finished
        message = (f"Interrupted before any stage finished: {again} starts again in {run_dir} (a training stage "
                   "from its last checkpoint, if it saved one).")
    else:
        message = "Interrupted before any stage was saved: nothing to resume."
    note = getattr(job, "registration_note", None)  # a registration the interrupt cut in two
    print(f"\n{message}" + (f" {note}" if note else ""), file=sys.stderr, flush=True)
    raise typer.Exit(130)


def _finished_stages(run_dir: Path) -> list[str]:
    """The stages a run folder holds finished: its mined pairs, and each stage folder with its marker."""
    finished = ["training data"] if (run_dir / "training_pairs.jsonl").exists() else []
    return finished + [stage for stage in ("centering", "embedder", "reranker", "blend")
                       if (run_dir / stage / "done.json").exists()]


def evaluate(
    index: Annotated[Optional[str], typer.Option(help="Evaluate on this index (needs --queries and --qrels).")] = None,
    beir: Annotated[Optional[Path], typer.Option(
        help="A BEIR folder: its corpus, queries.jsonl and qrels/SPLIT.tsv (--queries and --qrels replace the "
             "folder's).")] = None,
    queries: Annotated[Optional[Path], typer.Option(
        help='Held-out queries: JSONL {"_id", "text"} (BEIR; .jsonl, .json or .ndjson) or TSV id<TAB>text.')] = None,
    qrels: Annotated[Optional[Path], typer.Option(
        help="Their judgements: TSV query-id<TAB>doc-id<TAB>score (header optional); doc ids as "
             "`unirank search --json` shows them.")] = None,
    split: Annotated[Optional[str], typer.Option(
        help="With --beir, the judgements scored: qrels/SPLIT.tsv (default: test).")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated: base, a trained NAME\\[@ALIAS], or registry refs.")] = "base",
    holdout_only: Annotated[bool, typer.Option(help="Drop queries a model was trained on instead of refusing.")] = False,
    record: Annotated[bool, typer.Option(help="Store the figures in the registry (promotion uses them).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print {system: {metric: value}} as JSON.")] = False,
    plot_path: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write a bar chart: a .png, .svg or .pdf file (another image type matplotlib writes, "
                       "or no extension: .png is added).")] = None,
) -> None:
    """nDCG@10, Recall@10/100 and MRR@10 for bm25, knn, hybrid and hybrid+rerank per model."""
    from unirank.evaluation.runner import Evaluation, plot, record_metrics, resolve_specs
    from unirank.registry import ModelRegistry
    from unirank.training.job import ensure_beir_index

    with client() as ur:
        registry = ModelRegistry(ur.settings.models_dir)
        try:
            data, name = _eval_set(index, beir, queries, qrels, split)
            if plot_path:  # found out before the evaluation, not after it
                plot_path = _chart_path(plot_path)
            options = _eval_options(index, beir, queries, qrels, split, holdout_only)
            specs = resolve_specs(models.split(","), registry)
            evaluation = Evaluation(ur.settings, ur.backend, stage=print_stage)

            def index_for(embedder):
                if beir:
                    return ensure_beir_index(ur.settings, ur.backend, embedder, beir, print_stage)
                from unirank.search.rebuild import reembedded_index

                return reembedded_index(ur.backend, index, embedder, stage=print_stage)

            results = evaluation.run(data, specs, index_for, holdout_only=holdout_only, documents_in=index)
            if record:
                record_metrics(registry, results, specs, name, options)
        except UnirankError as exc:
            fail(exc)
        finally:
            registry.close()
    meta = results.pop("_meta")

    def chart() -> None:
        """After the figures are printed: a chart that cannot be written loses them no more."""
        try:
            plot(results, plot_path, f"{name} ({meta['queries']} held-out queries)")
        except (OSError, ValueError, RuntimeError) as exc:
            kept = "printed and recorded" if record else "printed"
            fail(UnirankError(f"--plot {plot_path}: the chart could not be written ({exc}). The figures were {kept}."))

    if as_json:
        print_json(results)
        if plot_path:
            chart()
        return
    notes = []
    if missing := meta.get("judged_documents_not_in_index"):
        notes.append(f"{missing} judged documents are not in the index: misses for every system")
    if unread := meta.get("judged_queries_not_in_queries"):
        notes.append(f"{unread} judged queries are not in the queries file: left out")
    note = f" ({'; '.join(notes)})" if notes else ""
    from unirank.evaluation.metrics import METRICS  # ranx (numba) takes ~1 s to import: only eval pays it

    table = Table(title=escape(f"{name}: {meta['queries']} held-out queries{note}"))
    table.add_column("system")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for system, scores in results.items():
        table.add_row(escape(system), *(f"{scores[m]:.4f}" for m in METRICS))
    console.print(table)
    if plot_path:
        chart()
        console.print(f"Chart: {escape(str(plot_path))}")


def _eval_set(index: str | None, beir: Path | None, queries: Path | None, qrels: Path | None,
              split: str | None):
    """The judged queries eval scores, and the eval set's name. With --beir, --queries and --qrels replace
    the folder's files, as `train --beir` takes them (they were ignored without a word)."""
    from unirank.evaluation.datasets import EvalSet, beir_corpus, beir_queries, load_beir, load_qrels, load_queries
    from unirank.training.job import beir_set_name

    if (index is None) == (beir is None):
        raise UnirankError("Give exactly one of --index NAME or --beir DIR.")
    if split is not None and not beir:
        raise UnirankError("--split chooses a BEIR folder's qrels/SPLIT.tsv: use it with --beir DIR.")
    if split is not None and qrels:
        raise UnirankError(f"--split {split} chooses the folder's qrels/{split}.tsv, which --qrels replaces: give "
                           "one of the two.")
    if queries and not qrels:
        raise UnirankError("--queries gives the query texts of --qrels: add --qrels FILE (with --beir, the "
                           "folder's queries.jsonl goes with its qrels).")
    if index is not None and not qrels:
        raise UnirankError("--index needs --queries FILE and --qrels FILE (held-out queries).")
    if beir:
        name = f"beir:{beir_set_name(beir)}"  # the folder's name and a digest of its path
        if not qrels:
            return load_beir(beir, split or "test").judged(), name
        # The folder's files that --queries and --qrels replace are not read: they may be absent or broken.
        data = EvalSet(queries={}, qrels={}, corpus_path=beir_corpus(beir))
        if not queries:
            data.queries, data.queries_path = beir_queries(beir)
    else:
        name = f"index:{index}"
        data = EvalSet(queries={}, qrels={})
    if queries:
        data.queries, data.queries_path = load_queries(queries), queries
    data.qrels, data.qrels_path = load_qrels(qrels), qrels
    return data.judged(), name


def _eval_options(index: str | None, beir: Path | None, queries: Path | None, qrels: Path | None,
                  split: str | None, holdout_only: bool) -> str:
    """The options that measure on this eval set again (recorded with the figures, for promotion's
    advice), with absolute paths."""
    import shlex

    parts = ["--index", index] if index else ["--beir", str(Path(beir).resolve())]  # type: ignore[arg-type]
    for option, value in (("--queries", queries), ("--qrels", qrels)):
        if value:
            parts += [option, str(Path(value).resolve())]
    if split:
        parts += ["--split", split]
    if holdout_only:
        parts.append("--holdout-only")
    return shlex.join(parts)


def _chart_path(path: Path) -> Path:
    """The file ``--plot`` writes, checked before the evaluation: after it, matplotlib refused an unknown
    extension (a traceback, the figures lost) and named no extension .png where "Chart:" said otherwise."""
    from matplotlib.backend_bases import FigureCanvasBase

    if path.is_dir():
        raise UnirankError(f"--plot {path}: that is a folder; give the chart's file name.")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    kinds = sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf", "raw", "rgba"})  # pgf needs LaTeX
    if path.suffix[1:].lower() not in kinds:
        raise UnirankError(f"--plot {path}: a chart is written as {', '.join('.' + k for k in kinds)} "
                           f"(e.g. {path.with_suffix('.png').name}), not {path.suffix}.")
    if not path.parent.is_dir():
        raise UnirankError(f"--plot {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise UnirankError(f"--plot {path}: that is a folder; give the chart's file name.")
    existed = path.exists()
    try:  # a folder this user cannot write to (root can write nearly anywhere: asking os.access is not enough)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise UnirankError(f"--plot {path}: the chart cannot be written there ({exc.strerror or exc}).") from None
    if not existed:
        path.unlink(missing_ok=True)
    return path
