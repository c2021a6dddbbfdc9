"""``unirank models …``: the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from unirank.cli.context import load_settings
from unirank.cli.output import console, errors, fail, print_json, print_record, print_table, to_the_minute
from unirank.errors import InvalidModelReferenceError, RegistrationError, UnirankError
from unirank.models.remote import APIS, Endpoint
from unirank.registry import ModelRegistry
from unirank.registry.describe import registration_record
from unirank.settings import Settings

models_app = typer.Typer(help="Register, list, show, promote, roll back, delete, export and optimize model versions, "
                              "and remove aliases (unalias).", no_args_is_help=True)


def _registry() -> tuple[ModelRegistry, Settings]:
    settings = load_settings()
    return ModelRegistry(settings.models_dir), settings


@models_app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Registry name; each registration is its next version.")],
    role: Annotated[str, typer.Option(help="embedder or reranker.")],
    path: Annotated[Optional[str], typer.Option(
        help="Folder of a saved model, here on this machine (download one from object storage first). A folder "
             "made by `models export` is registered with the record it carries: base model, training queries "
             "(evaluation still refuses them), data hash, hyper-parameters, metrics and where it came from.")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        help="URL of a model server (e.g. http://host:8080): ingestion and search call it instead.")] = None,
    api: Annotated[Optional[str], typer.Option(
        help="Request shape the endpoint speaks: openai or tei (embedder), tei or cohere (reranker).")] = None,
    token_env: Annotated[Optional[str], typer.Option(
        help="Environment variable holding the endpoint's bearer token (read at each request).")] = None,
    token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the bearer token; re-read when it changes, so tokens rotate without restarts.")] = None,
    remote_model: Annotated[Optional[str], typer.Option(
        help="The model id the server knows it by (default: its only model of this role).")] = None,
    tokenizer: Annotated[str, typer.Option(
        help="Local tokenizer that chunks text for a remote embedder: a folder, or `base`.")] = "base",
    blend_weight: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0,
        help="A remote reranker's blend weight (0-1; 0 keeps the hybrid order), as a trained reranker saves in "
             "its unirank_reranker.json. Default: that of the reranker registered here the model id names, "
             "else none (its scores alone, 1.0, unless reranker.blend_weight is set).")] = None,
    force: Annotated[bool, typer.Option(
        help="Register a folder whose files are those of a version of NAME already (refused without it).")] = False,
) -> None:
    """Register a model folder (--path) or an HTTP endpoint (--endpoint) as the next version of NAME.

    A folder whose files are identical to a version of NAME already registered is refused, naming that
    version (use it as it is); --force registers it again as a new version."""
    registry, settings = _registry()
    try:
        if (path is None) == (endpoint is None):
            raise RegistrationError("Give either --path DIR (a saved model folder) or --endpoint URL (a model server).")
        endpoint_only = {"--api": api, "--token-env": token_env, "--token-file": token_file,
                         "--remote-model": remote_model, "--tokenizer": tokenizer if tokenizer != "base" else None,
                         "--blend-weight": blend_weight}
        if path is not None and any(v is not None for v in endpoint_only.values()):
            given = ", ".join(k for k, v in endpoint_only.items() if v is not None)
            raise RegistrationError(f"{given} describe an endpoint (--endpoint URL); a model folder (--path) takes none.")
        registry.check_registrable(name, role)  # before a model loads
        if blend_weight is not None and role != "reranker":
            raise RegistrationError("--blend-weight is a reranker's (how much its score counts against the hybrid "
                               f"rank); an {role} takes none.")
        if path is not None:
            folder = _local_folder(path)
            # Before a model loads (a folder without config.json is refused as no model by
            # registration_record, unhashed); register checks again under its lock, for a registration
            # of the same files that gets in between.
            if not force and (folder / "config.json").is_file():
                registry.check_not_identical(name, folder)
            record, warnings = registration_record(folder, role)
            mv = registry.register(name, role, path=folder, record=record, allow_identical=force)
            if not (mv.record.get("lineage") or {}).get("copy_of"):  # else its record came from that version
                for warning in warnings:
                    errors.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        else:
            assert endpoint is not None
            remote = Endpoint(url=endpoint, api=api or APIS[role][0], role=role, token_env=token_env,
                              token_file=str(token_file) if token_file else None, remote_model=remote_model)
            from unirank.models.loading import describe_remote

            record = describe_remote(remote, settings, tokenizer=tokenizer, blend_weight=blend_weight)
            mv = registry.register(name, role, record=record)
    except UnirankError as exc:
        fail(exc)
    finally:
        registry.close()
    where = f", {mv.record['endpoint']} ({mv.record['api']})" if mv.path is None else ""
    console.print(f"Registered [bold]{mv.ref}[/bold] ({mv.role}, {mv.record.get('dims', '-')} dims{escape(where)}).")
    blend = _remote_blend(mv.to_dict())
    if blend:
        (console if "blend_weight" in mv.record else errors).print(escape(blend))
    source = (mv.record.get("lineage") or {}).get("exported_from")
    # Not a count: a query is kept as one or two fingerprints (as written, and by its words alone).
    kept = ["its training queries' fingerprints" if "training_queries" in mv.record else "",
            f"base model {mv.record['base_model']}" if "data_hash" in mv.record else "",
            "data hash and hyper-parameters" if "hyperparameters" in mv.record else "",
            f"metrics on {'; '.join(mv.evaluations)}" if mv.evaluations else ""]
    if source and any(kept):
        console.print(escape(f"From the export of {source}, with its record: {', '.join(k for k in kept if k)}."))


def _remote_blend(record: dict) -> str | None:
    """What a remote reranker's scores are blended with the hybrid rank at: its recorded blend weight, or
    that none is recorded (1.0, reranker.blend_weight aside). None for other versions."""
    if record.get("role") != "reranker" or record.get("path") is not None or not record.get("endpoint"):
        return None
    if "blend_weight" in record:
        source = record.get("blend_weight_from")
        whose = f", that of {source}, the reranker registered here its model id names" if source else ""
        return (f"Its scores are blended with the hybrid rank at weight {record['blend_weight']}{whose}; "
                "reranker.blend_weight overrides it.")
    return ("note: no blend weight is recorded (its model id names no reranker registered here): its scores "
            "replace the hybrid order (weight 1.0) unless reranker.blend_weight is set. For a reranker trained "
            "by unirank, register it with --blend-weight W, the weight in its unirank_reranker.json.")


def _local_folder(path: str) -> Path:
    """``--path`` as a local folder: a URI of object storage is refused as such (Path("s3://b/k") read as
    the folder "s3:/b/k", and the error named that)."""
    from unirank.ingest.uris import local_path

    scheme, sep, _ = path.partition("://")
    if sep and len(scheme) > 1:  # not a Windows drive letter
        if scheme.lower() == "file":
            return Path(local_path(path))
        raise RegistrationError(
            f"--path {path}: `models register` reads a model folder on this machine; registering from object "
            f"storage ({scheme}://) is not supported. Download the folder first (e.g. `aws s3 cp --recursive "
            f"{path} ./{path.rstrip('/').rsplit('/', 1)[-1]}`) and register that folder.")
    return Path(path).expanduser()


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print the versions as JSON.")] = False) -> None:
    """List every registered version."""
    registry, _ = _registry()
    try:
        versions = registry.list()
    except UnirankError as exc:  # a damaged registry.sqlite
        fail(exc)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    if not versions:
        console.print("No models registered. Train one with `unirank train` or `unirank models register`.")
        return
    rows = []
    for v in versions:
        ndcg = v.metrics.get("ndcg@10")
        rows.append({"model": v.ref, "role": v.role, "aliases": ",".join(v.aliases),
                     "dims": str(v.record.get("dims", "-")), "ndcg@10": f"{ndcg:.4f}" if ndcg is not None else "-",
                     # A figure means nothing without the queries it was measured on (the latest evaluation's).
                     "eval set": str(v.metrics.get("eval_set") or "-") if ndcg is not None else "-",
                     "created (UTC)": to_the_minute(v.created_at)})
    print_table(rows, names=("model",), optional=("created (UTC)",))


@models_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False) -> None:
    """Show one version: NAME (latest), NAME@VERSION or NAME@ALIAS, and the history of each of NAME's aliases."""
    registry, _ = _registry()
    try:
        mv = registry.get(ref)
    except UnirankError as exc:
        fail(exc)
    # Every alias's history under its name: only prod's was shown, unlabelled, even for NAME@staging.
    data = {**mv.to_dict(), "history": registry.histories(mv.name)}
    if as_json:
        print_json(data)
    else:
        print_record(_files_summed(data))
    blend = _remote_blend(data)
    if blend and "blend_weight" not in data:  # a recorded one is in the record
        errors.print(escape(blend))


def _files_summed(data: dict) -> dict:
    """The registered file listing (a line a file, what `files_missing` checks) as a count and a size."""
    listing = data.get("files")
    if not isinstance(listing, dict):
        return data
    return {**data, "files": f"{len(listing)}, {sum(listing.values()) / 1e6:,.1f} MB (--json lists them)"}


@models_app.command("promote")
def promote(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@ALIAS) to promote; a bare NAME is refused.")],
    alias: Annotated[str, typer.Option(help="Alias to point at REF.")] = "prod",
    force: Annotated[bool, typer.Option(
        help="Promote even if its held-out eval is worse, or measured on no set and system the current version's "
             "was (logged).")] = False,
) -> None:
    """Point an alias at a version, if it is at least as good as the current one.

    The two are compared on nDCG@10 of an evaluation both had: the same eval set, queries and judgments,
    measured with the same system (the same search mode, knn, hybrid or hybrid+rerank, and for a reranker
    the same embedder's results), preferring the set the candidate was trained on. Two rerankers without
    one are compared as trained pairs (`eval --models NAME@1,NAME@2`: each over the embedder it was trained
    with), which the message says. Without either the promotion is refused (--force promotes anyway).
    When the current version has no held-out figures, the promotion goes ahead with a warning that it was
    not checked."""
    registry, _ = _registry()
    try:
        mv = registry.promote(ref, alias, force=force,
                              warn=lambda message: errors.print(f"[yellow]warning:[/yellow] {escape(message)}"))
    except UnirankError as exc:
        fail(exc)
    console.print(f"{mv.name}@{alias} → version {mv.version}.")
    note = registry.history(mv.name, alias)[-1]["note"]
    if note.startswith("promoted: "):  # what it was compared on (the trained pairs, for two rerankers)
        console.print(f"Checked: {escape(note.removeprefix('promoted: '))}.", soft_wrap=True)


@models_app.command("rollback")
def rollback(name: Annotated[str, typer.Argument(help="Registry name.")],
             alias: Annotated[str, typer.Option(help="The alias to move back.")] = "prod") -> None:
    """Point an alias back at the version it named before."""
    registry, _ = _registry()
    try:
        _refuse_name_at_alias("rollback", name, alias)  # else "No model named 'emb@prod'"
        mv = registry.rollback(name, alias)
    except UnirankError as exc:
        fail(exc)
    console.print(f"{name}@{alias} rolled back to version {mv.version}.")


@models_app.command("unalias")
def unalias(name: Annotated[str, typer.Argument(help="Registry name (without @).")],
            # Optional to typer, so that NAME@ALIAS (or no --alias) gets an answer saying how to write it,
            # not "Missing option '--alias'".
            alias: Annotated[Optional[str], typer.Option(help="The alias to remove (prod, staging...).")] = None,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Remove an alias from NAME; the version it names stays.

    For a mistyped alias, or one whose version is to be deleted with no other to point it at. The removal
    is kept in the alias's history, and rollback does not go back past it. A setting that names NAME@ALIAS
    no longer loads; `serve models` keeps serving the version it loaded (listed under failed_swaps on
    /ready)."""
    registry, _ = _registry()
    try:
        _refuse_name_at_alias("unalias", name, alias)
        if alias is None:
            raise InvalidModelReferenceError(f"Name the alias to remove: `unirank models unalias {name} --alias "
                                             f"ALIAS` ({registry.aliases_said(name)}).")
        named = registry.unaliasable(name, alias)  # refused before asking
        if not yes and not typer.confirm(f"Remove {name}@{alias} (it names version {named})? A setting naming "
                                         f"{name}@{alias} no longer loads."):
            raise typer.Exit(1)
        named = registry.unalias(name, alias)
    except UnirankError as exc:
        fail(exc)
    finally:
        registry.close()
    console.print(f"Removed {name}@{alias} (it named version {named}; the version is kept).")


def _refuse_name_at_alias(command: str, name: str, alias: str | None) -> None:
    """``rollback`` and ``unalias`` take NAME and --alias ALIAS apart; NAME@ALIAS is answered with that form."""
    if "@" in name:
        base, _, given = name.partition("@")
        raise InvalidModelReferenceError(f"Give the name and the alias apart: `unirank models {command} {base} --alias "
                           f"{given or alias or 'ALIAS'}`.")


@models_app.command("delete")
def delete(ref: Annotated[str, typer.Argument(help="NAME@VERSION to delete (a number, not an alias or a bare NAME).")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Delete a version and its files. Refused while an alias (prod...) names it: promote another version to
    that alias first, or remove the alias (`models unalias`). Its number is not given to a later registration.

    The indexes embedded with the version are named first: they are then read with a registered version
    that makes its vectors (an optimized copy of it, or the one it was made from), and with none left
    `unirank index rebuild INDEX --model ...` re-embeds one."""
    registry, settings = _registry()
    try:
        mv = registry.deletable(ref)  # refused before asking
        size = sum(p.stat().st_size for p in mv.path.rglob("*") if p.is_file()) if mv.path and mv.path.is_dir() else 0
        files = f" and its files ({size / 1e6:,.0f} MB)" if size else ""
        used_by = _indexes_embedded_with(settings, mv.ref)
        in_use = (f" Indexes embedded with it: {', '.join(used_by)}; they are then read with a registered copy "
                  "that makes the same vectors, or need `unirank index rebuild INDEX --model ...`." if used_by else "")
        if not yes and not typer.confirm(f"Delete {mv.ref} ({mv.role}){files}?{in_use}"):
            raise typer.Exit(1)
        registry.delete(mv.ref)
    except UnirankError as exc:
        fail(exc)
    finally:
        registry.close()
    console.print(f"Deleted {mv.ref}.")
    if used_by and yes:  # asked nothing: said after
        errors.print(f"note:{escape(in_use)}", soft_wrap=True)


def _indexes_embedded_with(settings: Settings, ref: str) -> list[str]:
    """The indexes whose vectors ``ref`` made, read from each index's metadata (nothing is opened)."""
    from unirank.search.factory import make_backend

    return sorted(name for name, model in make_backend(settings).index_models().items() if str(model) == ref)


@models_app.command("export")
def export(ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
           to: Annotated[str, typer.Option("--to", help="Folder, s3:// or oss:// URI.")],
           force: Annotated[bool, typer.Option(
               help="Replace TO/NAME-vVERSION even when it holds something other than an earlier export of "
                    "the version.")] = False) -> None:
    """Copy a version's files, and its record, to TO/NAME-vVERSION in a folder or object storage.

    unirank_model.json, written last, holds the version's record (base model, training queries, data hash,
    hyper-parameters, metrics and the eval sets they came from): `models register --path` restores it.
    An earlier export there is replaced whole: in a folder the copy is made beside it and renamed into
    place; in object storage the old marker is deleted first, objects not in the new export are deleted,
    and the marker is written last (until then the copy reads as incomplete)."""
    registry, settings = _registry()
    try:
        dest = registry.export(ref, to, settings.storage, force=force)
    except UnirankError as exc:
        fail(exc)
    console.print(f"Exported {ref} to {escape(str(dest))}.")


from unirank.cli.optimize import optimize  # noqa: E402  (its own module; registered here with the others)

models_app.command("optimize")(optimize)
