"""The model registry: versions, aliases, promotion refusal, rollback, export (folder and S3)."""

from __future__ import annotations

import json
import shutil
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from env_helpers import without_unirank_settings
from serving_helpers import free_port
from unirank.errors import ExportError, ModelNotFoundError, PromotionRefusedError
from unirank.models.loading import resolve_model_path
from unirank.registry import ModelRegistry

BASE = Path(resolve_model_path("base")[0])


@pytest.fixture()
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def _version(registry, ndcg=None):
    record = {"dims": 384, "base_model": "all-MiniLM-L6-v2"}
    if ndcg is not None:
        record["metrics"] = {"ndcg@10": ndcg}
    return registry.register("cisi-embed", "embedder", path=BASE, record=record)


def test_versions_are_immutable_copies_with_records(registry):
    v1, v2 = _version(registry, 0.40), _version(registry, 0.45)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.path != v2.path and (v1.path / "model.safetensors").exists()
    assert json.loads((v2.path / "unirank_model.json").read_text()) == {"name": "cisi-embed", "version": 2, "role": "embedder"}
    assert registry.get("cisi-embed").version == 2  # latest
    assert registry.get("cisi-embed@1").metrics == {"ndcg@10": 0.40}
    assert [v.ref for v in registry.list()] == ["cisi-embed@1", "cisi-embed@2"]


def test_a_registry_read_before_its_first_registration_sees_it_after(tmp_path):
    """Reads write nothing, and a long-lived reader (the model server's alias poll) still sees the
    registry another process then creates."""
    reader = ModelRegistry(tmp_path / "models")
    assert reader.list() == [] and not reader.exists("mini")
    assert not (tmp_path / "models").exists()
    ModelRegistry(tmp_path / "models").register("mini", "embedder", path=BASE, record={"dims": 384})
    assert [v.ref for v in reader.list()] == ["mini@1"]


def test_two_registrations_at_once_get_a_version_each_with_their_own_files(tmp_path):
    """Both took version 1: the second copied its files over the first's, then its row was refused, so
    `models show race@1` described one model and loading it gave the other."""
    import threading

    folders = {}
    for which in ("a", "b"):
        folder = folders[which] = tmp_path / which
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "weights.bin").write_bytes(which.encode() * 20_000_000)  # a copy slow enough to overlap
    start, outcome = threading.Barrier(2), {}

    def register(which: str) -> None:
        registry = ModelRegistry(tmp_path / "models")  # as another process would: its own connection
        start.wait()
        try:
            outcome[which] = registry.register("race", "embedder", path=folders[which], record={"which": which})
        finally:
            registry.close()

    threads = [threading.Thread(target=register, args=(w,)) for w in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.version for v in outcome.values()) == [1, 2]
    for which, version in outcome.items():
        assert version.record["which"] == which and (version.path / "weights.bin").read_bytes()[:1] == which.encode()
    assert not [p for p in (tmp_path / "models" / "race").iterdir() if p.name.startswith(".")]  # nothing left over


def test_registries_opened_at_once_on_a_new_folder_all_open(tmp_path):
    """Switching a new database to WAL takes an exclusive lock that SQLite refuses at once, without its busy
    timeout, while another connection takes one: two registrations at once on a new registry (or two first
    ingests, two chats) failed now and then with "database is locked"."""
    import threading

    failures = []

    def open_registry(root, start) -> None:
        start.wait()
        registry = ModelRegistry(root)
        try:
            registry._connect(create=True)  # as a first registration does
        except Exception as exc:  # noqa: BLE001 - any failure to open is the defect
            failures.append(exc)
        finally:
            registry.close()

    for attempt in range(40):  # about one attempt in eight failed with the plain PRAGMA
        start = threading.Barrier(6)
        threads = [threading.Thread(target=open_registry, args=(tmp_path / str(attempt), start)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_promotion_refuses_a_worse_candidate_unless_forced(registry):
    _version(registry, 0.45), _version(registry, 0.40), _version(registry, 0.47)
    registry.promote("cisi-embed@1")
    with pytest.raises(PromotionRefusedError, match=r"0\.4000.*worse than cisi-embed@1 at 0\.4500"):
        registry.promote("cisi-embed@2")
    assert registry.get("cisi-embed@prod").version == 1
    registry.promote("cisi-embed@2", force=True)
    assert registry.get("cisi-embed@prod").version == 2
    assert registry.history("cisi-embed")[-1]["note"].startswith("forced:")
    registry.promote("cisi-embed@3")
    assert registry.get("cisi-embed@prod").aliases == ["prod"]


def test_unevaluated_candidate_cannot_replace_an_evaluated_prod(registry):
    _version(registry, 0.45), _version(registry)
    registry.promote("cisi-embed@1")
    with pytest.raises(PromotionRefusedError, match="Evaluate it first"):
        registry.promote("cisi-embed@2")


def test_rollback_walks_the_alias_history(registry):
    for score in (0.40, 0.42, 0.44):
        _version(registry, score)
    registry.promote("cisi-embed@1")
    registry.promote("cisi-embed@2")
    registry.promote("cisi-embed@3")
    assert registry.rollback("cisi-embed").version == 2
    assert registry.get("cisi-embed@prod").version == 2
    assert registry.rollback("cisi-embed").version == 1  # further back, not to v3 again
    with pytest.raises(ModelNotFoundError, match="no earlier version to roll back to"):
        registry.rollback("cisi-embed")
    registry.promote("cisi-embed@3")
    assert registry.rollback("cisi-embed").version == 1
    with pytest.raises(ModelNotFoundError, match="never been set"):
        registry.rollback("cisi-embed", "staging")


def test_unknown_references_name_what_exists(registry):
    _version(registry)
    with pytest.raises(ModelNotFoundError, match="has no version 9; it has 1"):
        registry.get("cisi-embed@9")
    with pytest.raises(ModelNotFoundError, match="Registered: cisi-embed"):
        registry.get("other")
    with pytest.raises(ModelNotFoundError, match="is not set"):
        registry.get("cisi-embed@prod")
    assert registry.get("cisi-embed@latest").version == 1  # "@latest … is not set; promote --alias latest"
    with pytest.raises(ModelNotFoundError, match="No model named 'other'. Registered: cisi-embed"):
        registry.rollback("other")
    with pytest.raises(ModelNotFoundError, match="No model named 'other'. Registered: cisi-embed"):
        registry.get("other@prod")
    with pytest.raises(ModelNotFoundError, match="cisi-embed@prod has never been set"):
        registry.rollback("cisi-embed")
    # Not read as the alias "1@2" ("is not set; promote … --alias 1@2", an alias promote refuses).
    for ref in ("cisi-embed@1@2", "cisi-embed@prod@"):
        with pytest.raises(ModelNotFoundError, match="more than one '@'") as refused:
            registry.get(ref)
        assert "is not set" not in str(refused.value)
    assert not registry.exists("cisi-embed@1@2")


def test_registry_models_load_by_reference(registry, tmp_path):
    _version(registry, 0.4)
    registry.promote("cisi-embed@1")
    path, name, version = resolve_model_path("cisi-embed@prod", tmp_path / "models")
    assert (name, version) == ("cisi-embed", "1") and Path(path) == registry.get("cisi-embed@1").path


def test_export_to_a_folder(registry, tmp_path):
    _version(registry)
    dest = registry.export("cisi-embed@1", str(tmp_path / "exported"))
    assert (Path(dest) / "model.safetensors").exists() and (Path(dest) / "1_Pooling" / "config.json").exists()
    files = sorted(p.relative_to(dest).as_posix() for p in Path(dest).rglob("*") if p.is_file())
    # Again to the same place: the same files, not a second copy nested inside the first.
    assert registry.export("cisi-embed@1", str(tmp_path / "exported")) == dest
    assert sorted(p.relative_to(dest).as_posix() for p in Path(dest).rglob("*") if p.is_file()) == files
    assert json.loads((Path(dest) / "unirank_model.json").read_text())["version"] == 1


def test_export_into_the_registry_is_refused(registry, tmp_path, monkeypatch):
    """`models export NAME@V --to REGISTRY/NAME/vV` wrote into a version folder (and to the registry root,
    a folder beside the versions); a path through a link into it is the same place."""
    v1 = _version(registry)
    (tmp_path / "link").symlink_to(registry.root)
    files = sorted(p.name for p in v1.path.iterdir())
    for to in (v1.path, registry.root, registry.root / "cisi-embed", tmp_path / "link" / "cisi-embed" / "v1"):
        with pytest.raises(ExportError, match=r"is inside the model registry .* Nothing was exported"):
            registry.export("cisi-embed@1", str(to), force=True)
    assert sorted(p.name for p in v1.path.iterdir()) == files
    assert {p.name for p in registry.root.iterdir() if not p.name.startswith("registry.sqlite")} == {"cisi-embed"}
    assert [p.name for p in (registry.root / "cisi-embed").iterdir()] == ["v1"]
    code, output = _cli(tmp_path, monkeypatch, "models", "export", "cisi-embed@1", "--to", str(v1.path))
    assert code == 2 and "is inside the model registry" in output, output
    assert registry.export("cisi-embed@1", str(tmp_path / "out")).endswith("out/cisi-embed-v1")  # beside it: fine


def test_a_registry_is_read_from_anywhere_and_after_its_folder_moves(tmp_path, monkeypatch):
    """With the default data_dir (".unirank", relative) a version's path was stored as ".unirank/models/…":
    run from another folder, or after the data dir moved, its model could not be loaded or exported."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    registry = ModelRegistry(Path(".unirank") / "models")
    registry.register("rel", "embedder", path=BASE)
    registry.close()
    monkeypatch.chdir(tmp_path)
    elsewhere = ModelRegistry(project / ".unirank" / "models")
    assert (elsewhere.get("rel@1").path / "model.safetensors").is_file()
    elsewhere.close()
    (project / ".unirank").rename(tmp_path / "moved")
    moved = ModelRegistry(tmp_path / "moved" / "models")
    assert moved.get("rel@1").path == (tmp_path / "moved" / "models" / "rel" / "v1").resolve()
    assert (Path(moved.export("rel@1", str(tmp_path / "out"))) / "model.safetensors").is_file()
    # Files gone from under it: said, not "Exported" over nothing.
    shutil.rmtree(moved.get("rel@1").path)
    with pytest.raises(ExportError, match="The files of rel@1 are missing"):
        moved.export("rel@1", str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()
    moved.close()


def test_export_to_object_storage_loads_back(registry, tmp_path, s3_endpoint):
    import boto3
    from sentence_transformers import SentenceTransformer

    from unirank.settings import StorageSettings

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="model-artefacts")
    storage = StorageSettings(endpoint_url=s3_endpoint, access_key_id="testing", secret_access_key="testing",
                              region="us-east-1")
    _version(registry)
    uri = registry.export("cisi-embed@1", "s3://model-artefacts/team-a/", storage)
    assert uri == "s3://model-artefacts/team-a/cisi-embed-v1"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="model-artefacts")["Contents"])
    assert registry.export("cisi-embed@1", "s3://model-artefacts/team-a", storage) == uri
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="model-artefacts")["Contents"]) == keys
    local = registry.get("cisi-embed@1").path
    expected = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert keys == [f"team-a/cisi-embed-v1/{name}" for name in expected]

    copy = tmp_path / "downloaded"
    for key in keys:
        (copy / key).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file("model-artefacts", key, str(copy / key))
    folder = copy / "team-a" / "cisi-embed-v1"
    vectors = SentenceTransformer(str(folder), device="cpu").encode(["library catalogue indexing"])
    original = SentenceTransformer(str(local), device="cpu").encode(["library catalogue indexing"])
    assert abs(vectors - original).max() < 1e-6


def test_export_to_a_missing_bucket_is_refused_without_creating_it(registry, s3_endpoint):
    import boto3

    from unirank.settings import StorageSettings

    storage = StorageSettings(endpoint_url=s3_endpoint, access_key_id="testing", secret_access_key="testing",
                              region="us-east-1")
    _version(registry)
    with pytest.raises(ExportError, match="s3://no-such-bucket does not exist: create the bucket first"):
        registry.export("cisi-embed@1", "s3://no-such-bucket/models", storage)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    assert "no-such-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # An endpoint nobody answers on is said to be unreachable, not reported as a missing bucket.
    dead = StorageSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="testing",
                           secret_access_key="testing", region="us-east-1")
    with pytest.raises(ExportError, match=r"Cannot reach s3://model-artefacts: Could not connect"):
        registry.export("cisi-embed@1", "s3://model-artefacts/models", dead)


@pytest.mark.slow  # six CLI subprocesses (~20 s), each step also tested in-process above: in the slow step
def test_cli_register_promote_rollback_and_export(tmp_path):
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_DATA_DIR=str(tmp_path / "data"))

    def run(*args, ok=True):
        proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        return proc

    assert json.loads(run("models", "list", "--json").stdout) == []
    assert not (tmp_path / "data").exists()  # reading in the wrong folder left a data dir there
    first = run("models", "register", "mini", "--path", str(BASE), "--role", "embedder")
    assert first.stdout.startswith("Registered mini@1 (embedder, 384 dims)") and first.stderr == "", first.stderr
    # The same folder again is said to be mini@1, not silently registered as mini@2; --force registers it.
    again = run("models", "register", "mini", "--path", str(BASE), "--role", "embedder", ok=False)
    assert "mini@1 already holds these files" in " ".join(again.stderr.split()) and "--force" in again.stderr
    run("models", "register", "mini", "--path", str(BASE), "--role", "embedder", "--force")
    shown = json.loads(run("models", "show", "mini@2", "--json").stdout)
    assert shown["dims"] == 384 and shown["max_seq_length"] == 256 and shown["role"] == "embedder"
    run("models", "promote", "mini@1", "--alias", "prod")
    run("models", "promote", "mini@2", "--alias", "prod")
    assert "rolled back to version 1" in run("models", "rollback", "mini").stdout
    shown = run("models", "show", "mini@prod").stdout.splitlines()
    assert "dims: 384" in shown and "aliases: prod" in shown and "history:" in shown and "  prod:" in shown, shown
    assert [line.split(", changed_at")[0] for line in shown if line.startswith("    - ")] == [
        "    - version: 1", "    - version: 2", "    - version: 1"], shown
    listed = json.loads(run("models", "list", "--json").stdout)
    assert [(m["version"], m["aliases"]) for m in listed] == [(1, ["prod"]), (2, [])]
    # The table says which eval set each figure was measured on (figures from two sets were side by side).
    _evaluated(ModelRegistry(tmp_path / "data" / "models"), "mini@2", 0.4321, "beir:cisi", "q-cisi")
    table = {line.split("│")[1].strip(): line for line in run("models", "list").stdout.splitlines() if "mini@" in line}
    assert "0.4321" in table["mini@2"] and "beir:cisi" in table["mini@2"] and "beir" not in table["mini@1"], table
    out = run("models", "export", "mini@1", "--to", str(tmp_path / "out")).stdout
    assert (tmp_path / "out" / "mini-v1" / "config.json").exists(), out
    err = run("models", "register", "mini", "--path", str(tmp_path), "--role", "embedder", ok=False)
    assert "config.json" in err.stderr
    # Endpoint options with a folder were dropped without a word.
    err = run("models", "register", "mini", "--path", str(BASE), "--role", "embedder", "--token-env", "KEY", ok=False)
    assert "--token-env describe an endpoint (--endpoint URL); a model folder (--path) takes none" in " ".join(
        err.stderr.split())
    assert json.loads(run("models", "show", "mini@latest", "--json").stdout)["version"] == 2  # it said "not set"


def test_optimized_copies_and_endpoints_share_their_sources_vectors_and_nothing_else():
    from unirank.registry import ModelVersion
    from unirank.registry.lineage import same_vector_refs

    def version(name, number, **record):
        return ModelVersion(name=name, version=number, role="embedder", path=None, created_at="", record=record)

    versions = [
        version("handbook-embed", 1), version("handbook-embed", 2),
        version("handbook-embed", 3, optimized_from="handbook-embed@2", backend="onnx"),
        version("handbook-embed", 4, optimized_from="handbook-embed@3", backend="onnx"),  # a copy's copy
        version("all-MiniLM-L6-v2", 1, bundled_base=True),
        version("all-MiniLM-L6-v2", 2, optimized_from="all-MiniLM-L6-v2@1", backend="onnx"),
        version("edge", 1, endpoint="http://models:8080", serves="handbook-embed@2"),  # checked on its vectors
        version("edge-base", 1, endpoint="http://models:8080", serves="all-MiniLM-L6-v2@base"),
        version("edge-other", 1, endpoint="http://other:8080"),
    ]
    base = "all-MiniLM-L6-v2@base"
    family = {"handbook-embed@2", "handbook-embed@3", "handbook-embed@4", "edge@1"}
    for ref in family:
        assert same_vector_refs(versions, ref, bundled_base_ref=base) == family
    assert same_vector_refs(versions, "handbook-embed@1", bundled_base_ref=base) == {"handbook-embed@1"}
    bundled = {base, "all-MiniLM-L6-v2@1", "all-MiniLM-L6-v2@2", "edge-base@1"}
    assert same_vector_refs(versions, "edge-other@1", bundled_base_ref=base) == {"edge-other@1"}
    assert same_vector_refs(versions, base, bundled_base_ref=base) == bundled
    assert same_vector_refs(versions, "all-MiniLM-L6-v2@2", bundled_base_ref=base) == bundled
    assert same_vector_refs(versions, "elsewhere@1", bundled_base_ref=base) == {"elsewhere@1"}


def test_a_registry_name_must_work_as_a_folder_a_list_item_and_a_setting(tmp_path):
    """A name with a comma broke `eval --models A,B`; `base` and `none` could be registered and then
    never loaded by name, since both already mean something wherever a model is named."""
    from unirank.errors import UnirankError

    registry = ModelRegistry(tmp_path / "models")
    for name in ("a b", "a,b", ".hidden", "team/x", "x@1", "", "-x", "x" * 129):
        with pytest.raises(UnirankError, match="Invalid model name"):
            registry.check_registrable(name, "embedder")
    for name in ("base", "None", "registry.sqlite", "registry.sqlite-journal", "Registry.SQLite-wal"):
        with pytest.raises(UnirankError, match="cannot be a registry name"):
            registry.check_registrable(name, "reranker")
    registry.check_registrable("cisi-embed.v2_b", "embedder")
    with pytest.raises(UnirankError, match="'base' is not in the registry: .* the bundled all-MiniLM-L6-v2"):
        registry.get("base")  # `unirank models show base`
    registry.close()


def test_a_damaged_registry_database_is_named_with_what_to_do(tmp_path, monkeypatch):
    """Every models command ended in an sqlite3.DatabaseError traceback ("file is not a database")."""
    from unirank.errors import ConfigurationError

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "registry.sqlite").write_text("garbage " * 200)
    registry = ModelRegistry(tmp_path / "models")
    said = r"models/registry\.sqlite cannot be read as the model registry's database \(file is not a database\)"
    for command in (registry.list, lambda: registry.get("emb@1"), lambda: registry.check_registrable("emb", "embedder"),
                    lambda: registry.register("emb", "embedder", path=BASE)):
        with pytest.raises(ConfigurationError, match=said + ".*Restore it from a backup, or move it aside"):
            command()
    registry.close()
    for args in (("models", "list"), ("models", "show", "emb@1"), ("models", "promote", "emb@1")):
        code, output = _cli(tmp_path, monkeypatch, *args)
        assert code == 2 and "cannot be read as the model registry's database" in output, output
        assert "Traceback" not in output


def test_a_registry_whose_database_was_moved_aside_numbers_past_the_version_folders_it_keeps(tmp_path):
    """Moved aside as its error says ("the version folders beside it are kept"), the next registration took
    version 1 and deleted v1's files to put its own there: a trained model's only copy."""
    registry = ModelRegistry(tmp_path / "models")
    registry.register("c", "embedder", path=BASE)
    registry.register("c", "embedder", path=BASE)
    (registry.root / "c" / "v1" / "OLD_FILE").write_text("precious")
    registry.close()
    registry.db_path.rename(registry.db_path.with_name("registry.sqlite.bad"))
    for leftover in registry.root.glob("registry.sqlite-*"):
        leftover.unlink()

    with ModelRegistry(tmp_path / "models") as fresh:
        assert fresh.list() == []
        assert fresh.register("c", "embedder", path=BASE).ref == "c@3"
        assert fresh.register("other", "embedder", path=BASE).ref == "other@1"
    assert (registry.root / "c" / "v1" / "OLD_FILE").read_text() == "precious"
    assert (registry.root / "c" / "v2" / "model.safetensors").is_file()


def test_the_python_registry_refuses_what_is_no_model_folder_or_no_text_and_closes_as_a_context(tmp_path):
    """ModelRegistry.register took a folder of documents (the CLI refuses it): promoted, it failed at the
    first ingest. A reference, name or alias that is not a str ended in an AttributeError or TypeError,
    and ``with ModelRegistry(...)`` was a TypeError."""
    from unirank.errors import InvalidModelReferenceError, RegistrationError

    docs = tmp_path / "my-docs"
    docs.mkdir()
    (docs / "api-keys.md").write_text("# Rotate API keys every 90 days.")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with ModelRegistry(tmp_path / "models") as registry:
        with pytest.raises(RegistrationError, match=r"my-docs is not a model folder: it has no config\.json \(nor "
                                                    r"modules\.json\)"):
            registry.register("notamodel", "embedder", path=docs)
        for not_a_folder in (tmp_path / "missing", 5):
            with pytest.raises(RegistrationError, match="is not a model folder"):
                registry.register("notamodel", "embedder", path=not_a_folder)
        with pytest.raises(RegistrationError, match="Invalid model name None"):
            registry.register(None, "embedder", path=model)
        assert registry.list() == [] and not (tmp_path / "models" / "notamodel").exists()
        registry.register("emb", "embedder", path=model)
        registry.promote("emb@1")
        refused = {r"A model reference must be a str \(NAME, NAME@VERSION or NAME@ALIAS\), got (None|1 \(int\))":
                       (lambda: registry.get(None), lambda: registry.delete(None), lambda: registry.promote(1)),
                   "An alias must be a str .*, got None": (lambda: registry.promote("emb@1", alias=None),),
                   "The name to roll back must be a str": (lambda: registry.rollback(None),),
                   "The alias to roll back must be a str": (lambda: registry.rollback("emb", ["prod"]),),
                   "The alias to remove must be a str": (lambda: registry.unalias("emb", None),)}
        for said, calls in refused.items():
            for call in calls:
                with pytest.raises(InvalidModelReferenceError, match=said):
                    call()
        assert registry.get("emb@prod").version == 1
    assert registry._db is None  # closed by the with


def test_registration_describes_a_folder_by_what_it_is_and_refuses_a_misfit(tmp_path):
    """A cross-encoder has no sentence vectors; a bi-encoder reranker ranks by cosine (as the server and
    search load it), not through a new, untrained classification head."""
    from unirank.errors import ModelLoadError
    from unirank.registry.describe import describe_model_folder
    from unirank.training.reranker_trainer import build_cross_encoder

    from unirank.errors import UnirankError

    with pytest.raises(UnirankError, match="Unknown role 'ranker'"):  # what `models register` checks first
        ModelRegistry(tmp_path / "models").check_registrable("handbook", "ranker")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        describe_model_folder(tmp_path / "missing", "embedder")
    bi_reranker = describe_model_folder(BASE, "reranker")
    assert bi_reranker["scoring"] == "bi-encoder cosine" and "num_labels" not in bi_reranker
    cross = tmp_path / "cross"
    build_cross_encoder(str(BASE), 64).save_pretrained(str(cross))
    with pytest.raises(ModelLoadError, match="is a cross-encoder"):
        describe_model_folder(cross, "embedder")
    assert describe_model_folder(cross, "reranker")["num_labels"] == 1
    assert describe_model_folder(BASE, "embedder")["dims"] == 384
    for vocabulary in ("tokenizer.json", "vocab.txt"):
        (cross / vocabulary).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=r"reads every word as unknown.*vocabulary .* is missing"):
        describe_model_folder(cross, "reranker")


def _base_files(folder: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """The bundled model's files in ``folder``, less ``leave_out``, to damage; its weights (90 MB) linked."""
    folder.mkdir()
    for file in BASE.iterdir():
        if file.name in leave_out:
            continue
        if file.name == "model.safetensors":
            (folder / file.name).symlink_to(file)
        elif file.is_dir():
            shutil.copytree(file, folder / file.name)
        else:
            shutil.copy(file, folder / file.name)
    return folder


@pytest.mark.parametrize("role", ["embedder", "reranker"])
def test_a_folder_without_its_vocabulary_is_refused(tmp_path, role):
    """Registered, its tokenizer read every word as [UNK]: every text got nearly the same vector (0.99
    cosine between unrelated passages) and search results were silently wrong."""
    from unirank.errors import ModelLoadError
    from unirank.registry.describe import registration_record

    folder = _base_files(tmp_path / "notok", leave_out=("tokenizer.json", "vocab.txt"))
    with pytest.raises(ModelLoadError, match=r"notok: its tokenizer reads every word as unknown \(\[UNK\]\): the "
                                             r"vocabulary \(tokenizer\.json or vocab\.txt\) is missing"):
        registration_record(folder, role)
    assert registration_record(_base_files(tmp_path / "vocab.txt only", leave_out=("tokenizer.json",)),
                               role)[0]["max_seq_length"] == 256


def test_a_ref_with_a_version_is_looked_up_in_the_registry_only(registry, tmp_path):
    """NAME@VERSION cannot be a hub id or folder: a typo gets the registry's answer, not the hub's."""
    with pytest.raises(ModelNotFoundError, match="names a registry version, but no model is registered"):
        resolve_model_path("cisi-embed@1", tmp_path / "empty")
    _version(registry)
    with pytest.raises(ModelNotFoundError, match="No model named 'cisi-emb'. Registered: cisi-embed"):
        resolve_model_path("cisi-emb@1", registry.root)
    assert resolve_model_path("cisi-embed@1", registry.root)[1:] == ("cisi-embed", "1")


@pytest.mark.parametrize("alias", ["", "3", "a@b", "team/prod", "bad alias", "a,b", "latest", ".hidden"])
def test_an_alias_that_could_not_be_read_back_is_refused(registry, alias):
    from unirank.errors import UnirankError

    _version(registry)
    with pytest.raises(UnirankError, match="Invalid alias"):
        registry.promote("cisi-embed@1", alias)
    assert registry.get("cisi-embed@1").aliases == []


def test_a_reranker_version_is_refused_as_the_embedder(tmp_path):
    """A cross-encoder would load as a bi-encoder (with only a warning) and index meaningless vectors."""
    from unirank.errors import ModelLoadError
    from unirank.models.loading import load_embedder
    from unirank.settings import Settings
    from unirank.training.reranker_trainer import build_cross_encoder

    settings = Settings(data_dir=tmp_path / "data")
    registry = ModelRegistry(settings.models_dir)
    build_cross_encoder(str(BASE), 64).save_pretrained(str(tmp_path / "cross"))
    registry.register("handbook-rerank", "reranker", path=tmp_path / "cross")
    registry.close()
    settings.embedder.model = "handbook-rerank@1"
    with pytest.raises(ModelLoadError, match="handbook-rerank@1 is registered as a reranker, not an embedder"):
        load_embedder(settings)


def test_promotion_compares_figures_only_when_measured_on_the_same_queries(registry):
    """A figure from other queries (another eval set, or --holdout-only dropping others) says nothing
    about which model is better, however high it is."""
    for ndcg, queries in [(0.40, "digest-a"), (0.45, "digest-b"), (0.42, "digest-a")]:
        registry.register("cisi-embed", "embedder", path=BASE, record={
            "dims": 384, "metrics": {"ndcg@10": ndcg, "eval_set": "beir:cisi", "eval_queries": queries}})
    registry.promote("cisi-embed@1")
    with pytest.raises(PromotionRefusedError, match="evaluated on other queries .* --models cisi-embed@1,cisi-embed@2"
                       ) as refused:
        registry.promote("cisi-embed@2")
    # The same set named twice said nothing: which queries each was measured on tells them apart.
    assert "(beir:cisi, queries digest-b) than cisi-embed@1 (beir:cisi, queries digest-a)" in str(refused.value)
    assert registry.promote("cisi-embed@3").aliases == ["prod"]


def test_promotion_compares_figures_only_when_measured_with_the_same_system(registry):
    """Two rerankers' figures over different embedders' results (the embedder is in `system`) were
    compared as if measured alike: a reranker over a stronger embedder's hits replaced a better one."""
    from unirank.evaluation.runner import ModelSpec, record_metrics

    def reranked(embedder, reranker, ndcg):
        results = {f"hybrid+rerank:{embedder}+{reranker}": {"ndcg@10": ndcg}, "_meta": {"queries_digest": "q"}}
        record_metrics(registry, results, [ModelSpec(label=reranker, embedder=embedder, reranker=reranker)],
                       "beir:cisi")

    for _ in range(2):
        registry.register("cisi-rerank", "reranker", path=BASE, record={"scoring": "bi-encoder cosine"})
    reranked("weak@1", "cisi-rerank@1", 0.40)
    reranked("strong@1", "cisi-rerank@2", 0.45)
    registry.promote("cisi-rerank@1")
    with pytest.raises(PromotionRefusedError, match=r"another system .*system hybrid\+rerank:strong@1\+cisi-rerank@2"
                       r".*system hybrid\+rerank:weak@1\+cisi-rerank@1"):
        registry.promote("cisi-rerank@2")
    reranked("weak@1", "cisi-rerank@2", 0.39)  # over the same embedder's hits: worse
    with pytest.raises(PromotionRefusedError, match=r"0\.3900 .* worse than cisi-rerank@1 at 0\.4000"):
        registry.promote("cisi-rerank@2")
    # An embedder's kNN figure (an optimized copy's quality check) is not its source's hybrid one.
    _version(registry), _version(registry)
    registry.record_evaluation("cisi-embed@1", {"ndcg@10": 0.40, "eval_set": "beir:cisi", "eval_queries": "q",
                                                "system": "hybrid:cisi-embed@1"})
    registry.record_evaluation("cisi-embed@2", {"ndcg@10": 0.41, "eval_set": "beir:cisi", "eval_queries": "q",
                                                "system": "knn:cisi-embed@2"})
    registry.promote("cisi-embed@1")
    with pytest.raises(PromotionRefusedError, match="another system"):
        registry.promote("cisi-embed@2")
    registry.record_evaluation("cisi-embed@2", {"ndcg@10": 0.41, "eval_set": "beir:cisi", "eval_queries": "q",
                                                "system": "hybrid:cisi-embed@2"})
    assert registry.promote("cisi-embed@2").aliases == ["prod"]  # each its own embedder: comparable


def test_promotion_compares_figures_only_when_measured_with_the_same_judgments(registry):
    """The queries' digest covered their ids and texts only: two versions measured against other judgments
    of the same queries (a qrels file corrected in between) were compared as if measured alike."""
    from unirank.evaluation.runner import ModelSpec, qrels_digest, record_metrics

    def evaluated(ref, ndcg, qrels):
        results = {f"hybrid:{ref}": {"ndcg@10": ndcg}, "_meta": {"queries_digest": "q", "qrels_digest": qrels}}
        record_metrics(registry, results, [ModelSpec(label=ref, embedder=ref)], "beir:cisi")

    _version(registry), _version(registry), _version(registry)
    queries = {"1": "a question", "2": "another"}
    before = qrels_digest({"1": {"d1": 1}, "2": {"d2": 1}, "3": {"d3": 1}}, queries)
    corrected = qrels_digest({"1": {"d1": 1}, "2": {"d2": 1, "d9": 1}}, queries)
    assert before == qrels_digest({"1": {"d1": 1}, "2": {"d2": 1}}, queries)  # only the scored queries' count
    assert before != corrected
    evaluated("cisi-embed@1", 0.40, before)
    evaluated("cisi-embed@2", 0.45, corrected)
    registry.promote("cisi-embed@1")
    assert registry.get("cisi-embed@2").metrics["eval_qrels"] == corrected
    with pytest.raises(PromotionRefusedError, match=rf"qrels {corrected}.* cannot be compared"):
        registry.promote("cisi-embed@2")
    evaluated("cisi-embed@2", 0.39, before)  # with the same judgments: worse
    with pytest.raises(PromotionRefusedError, match=r"0\.3900 .* worse than cisi-embed@1 at 0\.4000"):
        registry.promote("cisi-embed@2")
    # A figure recorded before judgments were digested compares as before.
    registry.record_evaluation("cisi-embed@3", {"ndcg@10": 0.41, "eval_set": "beir:cisi", "eval_queries": "q",
                                                "system": "hybrid:cisi-embed@3"})
    assert registry.promote("cisi-embed@3").version == 3
    # Measured again with judgments, it is the one figure of its set, queries and system.
    evaluated("cisi-embed@3", 0.42, before)
    assert [f["ndcg@10"] for f in registry.get("cisi-embed@3").evaluations.values()] == [0.42]


def _rerankers_of_two_runs(registry, runs: int = 2):
    """Pairs as `unirank train --name tiny` registers them: each record names its partner (trained_with)."""
    pairs = []
    for _ in range(runs):
        e = registry.register("tiny-embed", "embedder", path=BASE, record={"dims": 384})
        r = registry.register("tiny-rerank", "reranker", path=BASE, record={"trained_with": e.ref})
        pairs.append((registry.update_record(e.ref, trained_with=r.ref), r))
    return pairs


def _scored(registry, embedder, reranker, ndcg, spec_embedder=None, options="--beir /data/cisi"):
    """What `unirank eval --beir /data/cisi --models ...` records for one system."""
    from unirank.evaluation.runner import ModelSpec, record_metrics

    results = {f"hybrid+rerank:{embedder}+{reranker}": {"ndcg@10": ndcg}, f"hybrid:{embedder}": {"ndcg@10": ndcg},
               "_meta": {"queries_digest": "q", "qrels_digest": "j"}}
    spec = ModelSpec(label=reranker, embedder=spec_embedder or embedder, reranker=reranker)
    record_metrics(registry, results, [spec], "beir:cisi", options)


def test_a_reranker_keeps_a_figure_per_system_and_an_alias_is_recorded_as_its_version(registry):
    """A version kept one figure per eval set and queries: a reranker's figure over one embedder was replaced
    by a later eval over another, and promotion then compared nothing. `weak@prod` and `weak@1` were two
    systems, though one model."""
    for name in ("weak", "strong"):
        registry.register(name, "embedder", path=BASE, record={"dims": 384})
    registry.promote("weak@1")
    for _ in range(2):
        registry.register("cisi-rerank", "reranker", path=BASE, record={"scoring": "bi-encoder cosine"})
    _scored(registry, "weak@prod", "cisi-rerank@1", 0.40)
    _scored(registry, "weak@1", "cisi-rerank@2", 0.45)
    _scored(registry, "strong@1", "cisi-rerank@2", 0.10)  # a later eval over another embedder's results
    assert registry.get("cisi-rerank@1").metrics["system"] == "hybrid+rerank:weak@1+cisi-rerank@1"
    systems = [f["system"] for f in registry.get("cisi-rerank@2").evaluations.values()]
    assert systems == ["hybrid+rerank:weak@1+cisi-rerank@2", "hybrid+rerank:strong@1+cisi-rerank@2"]
    registry.promote("cisi-rerank@1")
    assert registry.promote("cisi-rerank@2").version == 2
    assert "0.4500 against 0.4000 for cisi-rerank@1" in registry.history("cisi-rerank")[-1]["note"]


def test_two_rerankers_are_compared_by_their_trained_pairs_as_the_readme_promotes_them(registry, tmp_path,
                                                                                      monkeypatch):
    """`eval --models tiny@1,tiny@2` scores each reranker over its own embedder, so promoting tiny-rerank@2
    after tiny-embed@2, as the README says, was refused: the two figures ran over different embedders."""
    (e1, r1), (e2, r2), (e3, r3) = _rerankers_of_two_runs(registry, runs=3)
    for (e, r), ndcg in (((e1, r1), 0.40), ((e2, r2), 0.45), ((e3, r3), 0.30)):
        _scored(registry, e.ref, r.ref, ndcg)
    for ref in (e1.ref, r1.ref, e2.ref):
        assert _cli(tmp_path, monkeypatch, "models", "promote", ref, "--alias", "prod")[0] == 0
    code, output = _cli(tmp_path, monkeypatch, "models", "promote", r2.ref, "--alias", "prod")
    assert code == 0, output
    assert ("Checked: the trained pairs compared: tiny-embed@2 + tiny-rerank@2 ndcg@10 0.4500 against tiny-embed@1 "
            "+ tiny-rerank@1 0.4000 on beir:cisi (each reranker over the embedder it was trained with; over one "
            "embedder's results: unirank eval --beir /data/cisi --models tiny-embed@2,tiny-rerank@1,tiny-rerank@2)"
            ) in output
    with pytest.raises(PromotionRefusedError, match=r"the trained pair tiny-embed@3 \+ tiny-rerank@3 scores ndcg@10 "
                                                    r"0\.3000 .*worse than tiny-embed@2 \+ tiny-rerank@2 at 0\.4500"):
        registry.promote(r3.ref)
    # Over an embedder it was not trained with, a reranker's figure is no trained pair's: the refusal names
    # the command that measures both over one embedder's results.
    (e4, r4), = _rerankers_of_two_runs(registry, runs=1)
    _scored(registry, e1.ref, r4.ref, 0.50)
    with pytest.raises(PromotionRefusedError, match=r"cannot be compared\. Evaluate both on the same queries with the "
                                                    r"same models: unirank eval --beir /data/cisi --models "
                                                    r"tiny-embed@4,tiny-rerank@2,tiny-rerank@4\."):
        registry.promote(r4.ref)


def _cli(tmp_path, monkeypatch, *args, input=None):
    """`unirank ARGS` in this process on the registry at tmp_path / "models" (the `registry` fixture's);
    the output with its lines joined (rich wraps them at the terminal's width)."""
    from typer.testing import CliRunner

    from env_helpers import clear_unirank_settings
    from unirank.cli.main import app

    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("selector", ["\u00b2", "1\u00b2", "\u0663"])  # ², 1², Arabic-Indic 3
def test_a_version_of_other_than_ascii_digits_is_refused_as_no_reference(registry, tmp_path, monkeypatch, selector):
    """`models show 'foo@²'` ended in a ValueError traceback from int(): str.isdigit() takes '²'."""
    with pytest.raises(ModelNotFoundError, match=f"'foo@{selector}' is not a model reference: after '@' give a "
                                                 "version number or an alias"):
        registry.get(f"foo@{selector}")
    with pytest.raises(ModelNotFoundError, match="is not a model reference"):
        registry.promote(f"foo@{selector}")
    code, output = _cli(tmp_path, monkeypatch, "models", "show", f"foo@{selector}")
    assert code == 2 and "is not a model reference" in output and "Traceback" not in output, output


def test_a_version_number_too_large_for_the_database_is_no_version(registry, tmp_path, monkeypatch):
    """`models show emb@99999999999999999999` (and delete, promote, export, a setting naming it) ended in
    an OverflowError traceback from SQLite, where emb@0 said which versions emb has."""
    _version(registry)
    for version in (2**63 - 1, 2**63, 10**22):
        ref = f"cisi-embed@{version}"
        for refused in (registry.get, registry.promote, registry.delete):
            with pytest.raises(ModelNotFoundError, match=f"cisi-embed has no version {version}; it has 1\\."):
                refused(ref)
        assert not registry.exists(ref)
    code, output = _cli(tmp_path, monkeypatch, "models", "show", f"cisi-embed@{10**22}")
    assert code == 2 and f"cisi-embed has no version {10**22}; it has 1." in output and "Traceback" not in output


def test_show_gives_each_alias_s_history_under_its_name(registry, tmp_path, monkeypatch):
    """`models show NAME@staging` printed prod's history alone, unlabelled, as if it were staging's."""
    _version(registry), _version(registry)
    registry.promote("cisi-embed@1")
    registry.promote("cisi-embed@2", "staging")
    code, output = _cli(tmp_path, monkeypatch, "models", "show", "cisi-embed@staging", "--json")
    assert code == 0, output
    history = json.loads(output)["history"]
    assert {alias: [h["version"] for h in entries] for alias, entries in history.items()} == {
        "prod": [1], "staging": [2]}
    code, output = _cli(tmp_path, monkeypatch, "models", "show", "cisi-embed@staging")
    assert "history: prod: - version: 1," in output and "staging: - version: 2," in output, output
    # The file listing registration keeps (a line a file) is a count and a size; --json lists it
    listing = registry.get("cisi-embed@2").record["files"]
    assert f"files: {len(listing)}, {sum(listing.values()) / 1e6:,.1f} MB (--json lists them)" in output, output
    assert "config.json" not in output


def test_a_registration_of_the_same_files_in_between_is_refused_under_the_lock(registry, tmp_path, monkeypatch):
    """Two `models register a --path m1` at once both passed the check for identical files (made before
    either had a row) and both registered them."""
    from unirank.cli import models as cli_models

    real = cli_models.registration_record

    def the_other_registers_meanwhile(folder, role):
        described = real(folder, role)
        other = ModelRegistry(registry.root)  # the other process, whose check passed too
        try:
            other.register("same", "embedder", path=folder, record=dict(described[0]))
        finally:
            other.close()
        return described

    monkeypatch.setattr(cli_models, "registration_record", the_other_registers_meanwhile)
    code, output = _cli(tmp_path, monkeypatch, "models", "register", "same", "--role", "embedder",
                        "--path", str(BASE))
    assert code == 2 and "same@1 already holds these files" in output and "--force" in output, output
    assert [v.ref for v in registry.list()] == ["same@1"]
    assert not [p for p in (registry.root / "same").iterdir() if p.name.startswith(".")]  # its copy is removed


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_copies_left_by_killed_registrations_and_optimizes_are_swept(registry, settings, monkeypatch):
    """A killed `models register` left NAME/.incoming-* (hundreds of MB) and a crashed `models optimize`
    DATA_DIR/optimize-*, forever. The next one removes those whose process is gone (or, where that
    cannot be asked, unchanged for hours); those still being written stay."""
    import socket

    from unirank.errors import UnirankError
    from unirank.models import optimize as optimize_module
    from unirank.models.optimize import Optimizer
    from unirank.registry import files

    host = socket.gethostname()
    assert "@" not in files.staging_name("optimize-")  # transformers read "DIR/optimize-1@host" as a hub id
    name_dir = registry.root / "cisi-embed"
    left = {kind: name_dir / f".incoming-{pid}" for kind, pid in (
        ("killed", f"{_gone_pid()}-{host}-0123abcd"), ("running", f"{os.getpid()}-{host}-4567ef01"),
        ("elsewhere", f"{_gone_pid()}-another-host-89ab"), ("unnamed", "c0ffee" * 5))}
    for folder in left.values():
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
    _version(registry)
    assert {k for k, f in left.items() if f.exists()} == {"running", "elsewhere", "unnamed"}
    monkeypatch.setattr(files, "STALE_AFTER_S", -1)  # as if hours had gone by
    _version(registry)
    assert {k for k, f in left.items() if f.exists()} == {"running"}  # its writer still runs

    registry = ModelRegistry(settings.models_dir)
    registry.register("swp", "embedder", path=BASE, record={"dims": 384})
    crashed = settings.data_dir / f"optimize-{_gone_pid()}-{host}-x1y2z3"
    (crashed / "model").mkdir(parents=True)

    def exported(source, dest, role, **_):
        assert not crashed.exists()  # swept before this export began
        raise UnirankError("stopped here")

    monkeypatch.setattr(optimize_module, "export_onnx", exported)
    try:
        with pytest.raises(UnirankError, match="stopped here"):
            Optimizer(settings, registry).run("swp@1")
    finally:
        registry.close()
    assert not list(settings.data_dir.glob("optimize-*"))


def test_a_version_is_deleted_with_its_files_unless_an_alias_names_it(registry, tmp_path, monkeypatch):
    """There was no way to delete a version: a wrong registration kept its ~88 MB forever."""
    v1, _, v3 = _version(registry, 0.40), _version(registry, 0.41), _version(registry, 0.42)
    for version in (1, 2, 3):
        registry.promote(f"cisi-embed@{version}")
    registry.promote("cisi-embed@2", "staging")
    code, output = _cli(tmp_path, monkeypatch, "models", "delete", "cisi-embed@3", "--yes")
    assert code == 2 and "cisi-embed@3 is cisi-embed@prod: nothing was deleted" in output, output
    assert "unirank models promote cisi-embed@VERSION --alias prod" in output and v3.path.is_dir()
    code, output = _cli(tmp_path, monkeypatch, "models", "delete", "cisi-embed@prod", "--yes")
    assert code == 2 and "by its number: cisi-embed@VERSION" in output, output
    # The indexes it made are named (read from their metadata): the registry does not know them.
    from unirank.search.embedded.backend import EmbeddedBackend
    from unirank.search.types import ModelSignature

    backend = EmbeddedBackend(tmp_path / "indexes")
    for name, version in (("handbook", "1"), ("wiki", "1"), ("other", "2")):
        backend.create_index(name, ModelSignature("cisi-embed", version, 384))
    backend.close()
    code, output = _cli(tmp_path, monkeypatch, "models", "delete", "cisi-embed@1", input="n\n")
    assert code == 1 and "Delete cisi-embed@1 (embedder) and its files" in output and v1.path.is_dir(), output
    assert "Indexes embedded with it: handbook, wiki;" in output and "other" not in output, output
    code, output = _cli(tmp_path, monkeypatch, "models", "delete", "cisi-embed@1", input="y\n")
    assert code == 0 and output.endswith("Deleted cisi-embed@1."), output
    assert not v1.path.exists() and [v.ref for v in registry.list()] == ["cisi-embed@2", "cisi-embed@3"]
    with pytest.raises(ModelNotFoundError, match=r"no version 1 \(it was deleted at .*\); it has 2, 3"):
        registry.get("cisi-embed@1")

    assert registry.rollback("cisi-embed").version == 2
    with pytest.raises(ModelNotFoundError, match="no earlier version"):  # not to the deleted cisi-embed@1
        registry.rollback("cisi-embed")
    assert registry.delete("cisi-embed@3").ref == "cisi-embed@3" and not v3.path.exists()
    (v3.path / "1_Pooling").mkdir(parents=True)  # files of a deletion killed before it removed them
    # Its number is not given again: an index or a setting naming cisi-embed@3 must not get another model.
    assert _version(registry).version == 4
    assert not v3.path.exists()  # the next registration removes them



def test_a_version_deleted_while_it_is_promoted_is_not_set_and_a_deleted_target_is_promoted_over(registry,
                                                                                                 monkeypatch):
    """A promotion read its candidate, then set the alias with no lock: a deletion in between left prod
    naming a deleted version, after which `models show NAME@prod` and every promotion to prod failed."""
    from unirank.registry import store

    _version(registry, 0.40), _version(registry, 0.41), _version(registry, 0.42)
    registry.promote("cisi-embed@1")
    compare = store.compare_for_promotion

    def deleted_meanwhile(candidate, current):
        other = ModelRegistry(registry.root)  # another process's `models delete cisi-embed@2 --yes`
        try:
            other.delete(candidate.ref)
        finally:
            other.close()
        return compare(candidate, current)

    monkeypatch.setattr(store, "compare_for_promotion", deleted_meanwhile)
    with pytest.raises(ModelNotFoundError, match=r"cisi-embed@2 was deleted .* while it was being promoted: "
                                                 r"nothing changed \(cisi-embed@prod still names v1\)"):
        registry.promote("cisi-embed@2")
    monkeypatch.setattr(store, "compare_for_promotion", compare)
    assert registry.get("cisi-embed@prod").version == 1
    assert [h["version"] for h in registry.history("cisi-embed")] == [1]

    # An alias set to a version that was deleted since (by a registry from before this was checked).
    registry.promote("cisi-embed@3")
    registry.db.execute("UPDATE aliases SET version = 3")
    registry.db.execute("DELETE FROM versions WHERE version = 3")
    registry.db.commit()
    with pytest.raises(ModelNotFoundError, match=r"cisi-embed@prod names cisi-embed@3, which was deleted\. Point "
                                                 r"it at another version \(`unirank models promote cisi-embed@VERSION"):
        registry.get("cisi-embed@prod")
    assert registry.promote("cisi-embed@1").aliases == ["prod"]  # it raised, as reading the alias did
    assert registry.history("cisi-embed")[-1]["note"] == "promoted (it named v3, deleted)"
    registry.db.execute("UPDATE aliases SET version = 3")
    registry.db.commit()
    assert registry.rollback("cisi-embed").version == 1  # from the deleted v3 to the one before it


def test_a_promotion_checked_against_a_version_the_alias_no_longer_names_is_refused(registry, monkeypatch):
    """The alias moved by another command between the check and the write was replaced unchecked."""
    from unirank.errors import UnirankError
    from unirank.registry import store

    _version(registry, 0.40), _version(registry, 0.41), _version(registry, 0.50)
    registry.promote("cisi-embed@1")
    compare = store.compare_for_promotion

    def promoted_meanwhile(candidate, current):
        monkeypatch.setattr(store, "compare_for_promotion", compare)  # the other promotion's own check
        other = ModelRegistry(registry.root)
        try:
            other.promote("cisi-embed@3")
        finally:
            other.close()
        return compare(candidate, current)

    monkeypatch.setattr(store, "compare_for_promotion", promoted_meanwhile)
    with pytest.raises(UnirankError, match="cisi-embed@prod was moved to v3 by another command while the "
                                           "promotion of cisi-embed@2 was checked against v1: nothing changed"):
        registry.promote("cisi-embed@2")
    assert registry.get("cisi-embed@prod").version == 3


def test_an_alias_is_removed_with_unalias_and_its_version_can_then_be_deleted(registry, tmp_path, monkeypatch):
    """There was no way to remove an alias: a mistyped `--alias prdo` stayed, and a promoted name's only
    version could never be deleted (`models delete` said to point the alias at another version first)."""
    only = _version(registry, 0.40)
    registry.promote("cisi-embed@1")
    registry.promote("cisi-embed@1", "prdo")
    code, output = _cli(tmp_path, monkeypatch, "models", "delete", "cisi-embed@1", "--yes")
    assert code == 2 and "or remove it (`unirank models unalias cisi-embed --alias prdo`)" in output, output
    code, output = _cli(tmp_path, monkeypatch, "models", "unalias", "cisi-embed", "--alias", "prdo", input="n\n")
    assert code == 1 and "Remove cisi-embed@prdo (it names version 1)?" in output, output
    code, output = _cli(tmp_path, monkeypatch, "models", "unalias", "cisi-embed", "--alias", "prdo", input="y\n")
    assert code == 0 and output.endswith("Removed cisi-embed@prdo (it named version 1; the version is kept)."), output
    assert registry.get("cisi-embed@1").aliases == ["prod"]
    code, output = _cli(tmp_path, monkeypatch, "models", "unalias", "cisi-embed", "--alias", "prdo", "--yes")
    assert code == 2 and "cisi-embed@prdo is not set: nothing was removed (its aliases are prod;" in output, output
    code, output = _cli(tmp_path, monkeypatch, "models", "unalias", "cisi-embed@prod", "--yes")
    assert code == 2 and "--alias" in output and registry.get("cisi-embed@prod").version == 1, output  # required
    code, output = _cli(tmp_path, monkeypatch, "models", "unalias", "cisi-embed@prod", "--alias", "prod", "--yes")
    assert code == 2 and "`unirank models unalias cisi-embed --alias prod`" in output, output

    assert registry.unalias("cisi-embed", "prod") == 1
    with pytest.raises(ModelNotFoundError, match="cisi-embed@prod is not set"):
        registry.get("cisi-embed@prod")
    with pytest.raises(ModelNotFoundError, match=r"cisi-embed@prod is not set \(it was removed"):
        registry.rollback("cisi-embed")
    code, output = _cli(tmp_path, monkeypatch, "models", "show", "cisi-embed", "--json")
    history = json.loads(output)["history"]
    assert [(h["version"], h["note"]) for h in history["prod"]] == [(1, "promoted"), (None, "removed (it named v1)")]
    assert registry.delete("cisi-embed@1").ref == "cisi-embed@1" and not only.path.exists()

    # Promoted again, rollback goes back no further than the removal.
    _version(registry, 0.41), _version(registry, 0.42)
    registry.promote("cisi-embed@2", "staging")
    registry.unalias("cisi-embed", "staging")
    registry.promote("cisi-embed@3", "staging")
    with pytest.raises(ModelNotFoundError, match="no earlier version to roll back to"):
        registry.rollback("cisi-embed", "staging")
    # An alias left naming a deleted version (before promotions were checked under the lock) is removed too.
    registry.db.execute("INSERT INTO aliases (name, alias, version) VALUES ('cisi-embed', 'old', 1)")
    registry.db.commit()
    with pytest.raises(ModelNotFoundError, match=r"or remove it \(`unirank models unalias cisi-embed --alias old`"):
        registry.get("cisi-embed@old")
    assert registry.unalias("cisi-embed", "old") == 1
    with pytest.raises(ModelNotFoundError, match="No model named 'other'"):
        registry.unalias("other", "prod")


def test_the_readme_s_model_commands_run_in_the_order_it_gives_them(registry, tmp_path, monkeypatch):
    """The fine-tuning walkthrough named handbook-embed@prod, which `train` never sets (it registers versions
    with no alias), rolled cisi-embed back from its first promotion, and deleted cisi-embed@1 just after
    the rollback made it prod again: each refused. Its `models` commands are run here in order, on
    versions as its `train` lines register them."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Fine-tune on your own documents", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text("{}")
    trained = {"handbook": 3, "cisi": 2}  # three `train --name handbook` lines; cisi trained twice, it says
    for stem, runs in trained.items():
        for run in range(1, runs + 1):
            versions = []
            for suffix, role in (("embed", "embedder"), ("rerank", "reranker")):
                (files / "weights.bin").write_bytes(f"{stem}-{suffix}-{run}".encode())
                partner = {"trained_with": versions[0].ref} if versions else {}
                versions.append(registry.register(f"{stem}-{suffix}", role, path=files, record=partner))
            registry.update_record(versions[0].ref, trained_with=versions[1].ref)
    # `eval --models cisi@1,cisi@2`, as it says: each pair's figures (the second run's better), which the
    # promotions of cisi-embed@2 and then cisi-rerank@2 compare; the rerankers' ran over different embedders.
    for run, ndcg in ((1, 0.40), (2, 0.45)):
        _scored(registry, f"cisi-embed@{run}", f"cisi-rerank@{run}", ndcg)
    ran = []
    for line in block.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] != ["unirank", "models"] or words[2] not in ("promote", "rollback", "show", "unalias",
                                                                   "delete"):
            continue
        confirm = ["--yes"] if words[2] in ("unalias", "delete") else []
        code, output = _cli(tmp_path, monkeypatch, "models", *words[2:], *confirm)
        assert code == 0, f"{line}\n{output}"
        ran.append(words[2])
    assert sorted(set(ran)) == ["delete", "promote", "rollback", "show", "unalias"], ran
    promoted = [change["note"] for change in registry.history("cisi-rerank")]
    assert promoted[1].startswith("promoted: the trained pairs compared: cisi-embed@2 + cisi-rerank@2"), promoted
    for ref in ("handbook-embed@prod", "handbook-rerank@prod", "cisi-embed@prod"):  # named after the block
        assert registry.get(ref).version == 1


def test_the_help_names_every_models_and_index_command_and_what_promotion_compares(tmp_path, monkeypatch):
    """`unirank models --help` said "Register, promote, roll back and export" (no list, show, delete,
    optimize), `index --help` left out `index remove`, and `models promote --help` said nothing of the
    system the two evaluations must share, which promotion has required since it compared them."""
    monkeypatch.setenv("COLUMNS", "300")  # one line a sentence, outside the boxes
    _, output = _cli(tmp_path, monkeypatch, "models", "--help")
    assert "Register, list, show, promote, roll back, delete, export and optimize model versions, and remove " \
           "aliases (unalias)." in output, output
    _, output = _cli(tmp_path, monkeypatch, "index", "--help")
    assert "List, inspect, rebuild (re-embed with another model), remove documents from and delete indexes." \
        in output, output
    _, output = _cli(tmp_path, monkeypatch, "models", "promote", "--help")
    assert "measured with the same system (the same search mode, knn, hybrid or hybrid+rerank, and for a " \
           "reranker the same embedder's results)" in output, output

# -- export carries the record; per-set figures; promotion; re-export; register's refusals ---------------------

TRAINED_QUERY = "how are library catalogues indexed"


def _trained_version(registry, name="t1-embed"):
    """A version as `unirank train` registers one: base model, data hash, hyper-parameters, training-query
    fingerprints, and (after `unirank eval`) figures saying which eval set they were measured on."""
    from unirank.training.examples import query_fingerprint

    record = {"dims": 384, "base_model": "all-MiniLM-L6-v2", "data_hash": "d4t4h45h",
              "hyperparameters": {"epochs": 1, "learning_rate": 2e-5}, "corpus_index": "handbook",
              "training_queries": [query_fingerprint(TRAINED_QUERY)]}
    mv = registry.register(name, "embedder", path=BASE, record=record)
    return registry.update_record(mv.ref, metrics={"ndcg@10": 0.5, "eval_set": "index:handbook",
                                                   "eval_queries": "q-handbook", "system": f"hybrid:{mv.ref}"})


def test_an_exported_folder_registers_again_with_its_record_and_training_queries_stay_refused(registry, tmp_path):
    """The export's marker held only {name, version, role}: registered again, the copy was recorded as
    base model "bert" with no training queries, and `unirank eval` scored it on the queries it was trained on."""
    from unirank.errors import LeakageError
    from unirank.evaluation.leakage import check_no_leakage
    from unirank.registry.describe import registration_record

    t1 = _trained_version(registry)
    dest = Path(registry.export(t1.ref, str(tmp_path / "out")))
    marker = json.loads((dest / "unirank_model.json").read_text())
    assert (marker["name"], marker["version"], marker["role"]) == ("t1-embed", 1, "embedder")  # as before
    assert marker["record"]["training_queries"] == t1.record["training_queries"] and marker["files_sha256"]

    record, warnings = registration_record(dest, "embedder")
    reimp = registry.register("reimp", "embedder", path=dest, record=record)
    assert warnings == []
    for key in ("base_model", "data_hash", "hyperparameters", "training_queries", "dims", "max_seq_length"):
        assert reimp.record[key] == t1.record.get(key, record.get(key)), key
    assert reimp.record["base_model"] == "all-MiniLM-L6-v2"  # not the config's model type, "bert"
    assert reimp.metrics["eval_set"] == "index:handbook" and reimp.metrics["ndcg@10"] == 0.5
    assert reimp.record["lineage"]["exported_from"] == "t1-embed@1"
    with pytest.raises(LeakageError, match="reimp@1 was trained on 1 of them"):
        check_no_leakage({"q1": TRAINED_QUERY.upper(), "q2": "an unseen question"}, [reimp])
    check_no_leakage({"q2": "an unseen question"}, [reimp])

    # A copy changed since the export keeps its training queries only: the rest describes other files.
    changed = tmp_path / "changed"
    shutil.copytree(dest, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text().replace("{", "{\n", 1))
    record, warnings = registration_record(changed, "embedder")
    assert record["training_queries"] == t1.record["training_queries"] and "data_hash" not in record
    assert "metrics" not in record and "files changed since t1-embed@1 was exported" in warnings[0]

    # An export from before exports carried records still registers, with a warning that says what is unknown.
    old = tmp_path / "old-export"
    shutil.copytree(dest, old)
    (old / "unirank_model.json").write_text(json.dumps({"name": "t1-embed", "version": 1, "role": "embedder"}))
    record, warnings = registration_record(old, "embedder")
    assert "training_queries" not in record and record["lineage"] == {"exported_from": "t1-embed@1"}
    assert "evaluation cannot refuse its training queries" in warnings[0]
    assert registry.register("old", "embedder", path=old, record=record).record["dims"] == 384


def test_links_to_the_exporting_registry_become_lineage(registry, tmp_path):
    """`optimized_from` names a version of the registry it was written in; registered elsewhere it would
    name whatever that registry holds under the same ref (lineage.same_vector_refs follows it)."""
    from unirank.registry.describe import exported_record

    registry.register("copy-embed", "embedder", path=BASE, record={"optimized_from": "src-embed@2", "backend": "torch"})
    dest = Path(registry.export("copy-embed@1", str(tmp_path / "out")))
    record, _ = exported_record(dest, "embedder")
    assert "optimized_from" not in record and record["lineage"]["optimized_from"] == "src-embed@2"
    assert record["backend"] == "torch"  # how it loads is kept


def test_a_trained_reranker_registered_from_its_export_names_its_partner_only_under_lineage(registry, tmp_path):
    """`trained_with` stayed at the top: in another registry, promotion compared the reranker's figures over
    that registry's tiny-embed@1 (another model, or none) as its trained pair's, and advised evaluating it."""
    from unirank.registry.describe import registration_record
    from unirank.registry.evaluations import over_its_partner

    (_, reranker), = _rerankers_of_two_runs(registry, runs=1)
    dest = Path(registry.export(reranker.ref, str(tmp_path / "out")))
    with ModelRegistry(tmp_path / "elsewhere") as other:
        other.register("tiny-embed", "embedder", path=BASE, record={"dims": 384})  # another tiny-embed@1
        record, _ = registration_record(dest, "reranker")
        copy = other.register("r", "reranker", path=dest, record=record)
        assert "trained_with" not in copy.record and copy.record["lineage"]["trained_with"] == "tiny-embed@1"
        figures = {"system": f"hybrid+rerank:tiny-embed@1+{copy.ref}", "ndcg@10": 0.5}
        assert not over_its_partner(figures, copy)
        # Registered before the link went under lineage, the record kept it at the top: not its partner here.
        old = other.change_record(copy.ref, lambda r: {**r, "trained_with": "tiny-embed@1"})
        assert not over_its_partner(figures, old)
    assert over_its_partner({"system": f"hybrid+rerank:tiny-embed@1+{reranker.ref}"}, reranker)


def _evaluated(registry, ref, ndcg, eval_set, queries):
    """What `unirank eval --models REF` (recording, the default) stores."""
    from unirank.evaluation.runner import ModelSpec, record_metrics

    results = {f"hybrid:{ref}": {"ndcg@10": ndcg, "recall@10": ndcg}, "_meta": {"queries_digest": queries}}
    record_metrics(registry, results, [ModelSpec(label=ref, embedder=ref)], eval_set)


def test_an_evaluation_on_another_set_keeps_the_figures_promotion_compares(registry):
    """A later `eval --models X@2` on another set replaced X@2's figures, and promotion then refused:
    "evaluated on other queries"."""
    _version(registry), _version(registry)
    _evaluated(registry, "cisi-embed@1", 0.40, "beir:cisi", "q-cisi")
    _evaluated(registry, "cisi-embed@2", 0.45, "beir:cisi", "q-cisi")
    _evaluated(registry, "cisi-embed@2", 0.10, "beir:scifact", "q-scifact")  # another corpus altogether
    v2 = registry.get("cisi-embed@2")
    assert v2.metrics["eval_set"] == "beir:scifact"  # the latest, as `models list` shows it
    assert [f["eval_set"] for f in v2.evaluations.values()] == ["beir:cisi", "beir:scifact"]
    registry.promote("cisi-embed@1")
    assert registry.promote("cisi-embed@2").aliases == ["prod"]
    assert "0.4500 against 0.4000 for cisi-embed@1 on beir:cisi" in registry.history("cisi-embed")[-1]["note"]

    # Worse on the set both were evaluated on: refused, whatever other sets say.
    _version(registry)
    _evaluated(registry, "cisi-embed@3", 0.30, "beir:cisi", "q-cisi")
    _evaluated(registry, "cisi-embed@3", 0.99, "beir:other", "q-other")
    with pytest.raises(PromotionRefusedError, match=r"0\.3000 on the held-out set \(beir:cisi, queries q-cisi, "
                                                     r"system hybrid:cisi-embed@3\)"):
        registry.promote("cisi-embed@3")


def test_two_evaluations_recorded_at_once_keep_both_sets(registry):
    """Two `eval` runs on two sets that record at the same moment: each read the record and wrote it
    back, and the one that wrote last dropped the other's figures."""
    import threading

    from unirank.evaluation.runner import record_metrics  # noqa: F401  (imported before the race, not in it)

    _version(registry)
    other = ModelRegistry(registry.root)  # the second `unirank eval` process's registry
    second: list[threading.Thread] = []

    def change(record):
        # The first evaluation has read the record; the second records its own in the meantime.
        second.append(threading.Thread(target=_evaluated, args=(other, "cisi-embed@1", 0.2, "beir:b", "q-b")))
        second[0].start()
        second[0].join(2)  # it finishes in that time unless the record is locked
        return {**record, "evaluations": {"beir:a": {"ndcg@10": 0.1, "eval_set": "beir:a"}}}

    registry.change_record("cisi-embed@1", change)
    second[0].join()
    assert sorted(registry.get("cisi-embed@1").evaluations) == ["beir:a", "beir:b, queries q-b, system hybrid:cisi-embed@1"]


def test_a_record_from_before_figures_were_kept_per_set_keeps_its_figures(registry):
    registry.register("cisi-embed", "embedder", path=BASE, record={
        "metrics": {"ndcg@10": 0.40, "eval_set": "beir:cisi", "eval_queries": "q-cisi"}})
    registry.register("cisi-embed", "embedder", path=BASE, record={
        "metrics": {"ndcg@10": 0.42, "eval_set": "beir:cisi", "eval_queries": "q-cisi"}})
    _evaluated(registry, "cisi-embed@2", 0.10, "beir:scifact", "q-scifact")
    assert [f["ndcg@10"] for f in registry.get("cisi-embed@2").evaluations.values()] == [0.42, 0.10]
    registry.promote("cisi-embed@1")
    registry.promote("cisi-embed@2")


def test_promotion_prefers_the_set_the_candidate_was_trained_on(registry):
    """Evaluated on two sets both versions share, the candidate is compared on its own corpus's."""
    for _ in range(2):
        registry.register("hb-embed", "embedder", path=BASE, record={"corpus_index": "handbook--all-MiniLM-L6-v2-base"})
    for ref, general, own in (("hb-embed@1", 0.30, 0.60), ("hb-embed@2", 0.35, 0.55)):
        _evaluated(registry, ref, general, "beir:scifact", "q-scifact")
        _evaluated(registry, ref, own, "index:handbook", "q-handbook")
    registry.promote("hb-embed@1")
    with pytest.raises(PromotionRefusedError, match=r"index:handbook.*worse than hb-embed@1 at 0\.6000"):
        registry.promote("hb-embed@2")


def test_a_bare_name_is_not_promoted_and_an_unchecked_promotion_is_said(registry):
    """`models promote t1-embed` promoted the latest version without a word; so did a promotion over a
    version with no held-out figures."""
    from unirank.errors import UnirankError

    _version(registry), _version(registry)
    with pytest.raises(UnirankError, match=r"Name the version to promote: cisi-embed@VERSION .* has versions 1, 2"):
        registry.promote("cisi-embed", "staging")
    with pytest.raises(ModelNotFoundError, match="No model named 'other'"):
        registry.promote("other")
    assert registry.get("cisi-embed@2").aliases == []
    warnings = []
    registry.promote("cisi-embed@1", "staging", warn=warnings.append)
    assert warnings == []  # the first: nothing to compare with
    registry.promote("cisi-embed@2", "staging", warn=warnings.append)
    assert warnings == ["The promotion of cisi-embed@2 to staging (from cisi-embed@1) was not checked: neither "
                        "cisi-embed@2 nor cisi-embed@1 has a held-out ndcg@10. To check it, evaluate both on the same "
                        "queries (unirank eval ... --models cisi-embed@1,cisi-embed@2) and promote again."]
    assert registry.history("cisi-embed", "staging")[-1]["note"].startswith("promoted, not checked:")
    assert registry.promote("cisi-embed@latest", "staging").version == 2  # named outright, it is taken


def test_exporting_again_replaces_the_earlier_export_whole(registry, tmp_path):
    """A second export into the same place merged: files of the earlier one (stale.bin, 3_Dense/) stayed."""
    from unirank.errors import ExportError

    _version(registry)
    dest = Path(registry.export("cisi-embed@1", str(tmp_path / "out")))
    listed = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    (dest / "stale.bin").write_bytes(b"old")
    (dest / "3_Dense").mkdir()
    (dest / "3_Dense" / "config.json").write_text("{}")
    assert Path(registry.export("cisi-embed@1", str(tmp_path / "out"))) == dest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == listed
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cisi-embed-v1"]  # no staging folder left

    # A folder of something else is not replaced unless asked.
    other = tmp_path / "other"
    (other / "cisi-embed-v1").mkdir(parents=True)
    (other / "cisi-embed-v1" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an export of cisi-embed@1.*--force"):
        registry.export("cisi-embed@1", str(other))
    assert (other / "cisi-embed-v1" / "notes.txt").read_text() == "mine"
    registry.export("cisi-embed@1", str(other), force=True)
    assert not (other / "cisi-embed-v1" / "notes.txt").exists()


def test_a_killed_export_leaves_no_copy_behind_after_the_next(registry, tmp_path, monkeypatch):
    """An export killed after its copy (SIGKILL, the OOM killer) left .NAME-vN.exporting-<random> beside the
    export forever, a whole model each time. Its copy is named for its process now, and the next export removes
    those whose process is gone; one still being written stays."""
    import socket

    import unirank.registry.export as export

    host = socket.gethostname()
    _version(registry)
    out = tmp_path / "out"
    left = {kind: out / name for kind, name in (
        ("killed", f".cisi-embed-v1.exporting-{_gone_pid()}-{host}-0123abcd"),
        ("moved aside", f".cisi-embed-v1.replaced-{_gone_pid()}-{host}-4567ef01"),
        ("running", f".cisi-embed-v1.exporting-{os.getpid()}-{host}-89abcdef"))}
    for folder in left.values():
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
    copies = []
    copytree = shutil.copytree

    def copy(src, dst, *args, **kwargs):
        copies.append(Path(dst))
        return copytree(src, dst, *args, **kwargs)

    monkeypatch.setattr(export.shutil, "copytree", copy)
    dest = Path(registry.export("cisi-embed@1", str(out)))
    assert copies[0].name.startswith(f".cisi-embed-v1.exporting-{os.getpid()}-{host}-")
    assert {kind for kind, folder in left.items() if folder.exists()} == {"running"}
    assert sorted(p.name for p in out.iterdir()) == [left["running"].name, dest.name]


def test_exporting_again_to_object_storage_leaves_no_stale_objects(registry, s3_endpoint):
    import boto3

    from unirank.errors import ExportError
    from unirank.settings import StorageSettings

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="reexport")
    storage = StorageSettings(endpoint_url=s3_endpoint, access_key_id="testing", secret_access_key="testing",
                              region="us-east-1")
    _trained_version(registry, "cisi-embed")

    def keys():
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="reexport").get("Contents", []))

    registry.export("cisi-embed@1", "s3://reexport/m", storage)
    first = keys()
    s3.put_object(Bucket="reexport", Key="m/cisi-embed-v1/stale.bin", Body=b"old")
    s3.put_object(Bucket="reexport", Key="m/cisi-embed-v1/3_Dense/config.json", Body=b"{}")
    registry.export("cisi-embed@1", "s3://reexport/m", storage)
    assert keys() == first
    marker = json.loads(s3.get_object(Bucket="reexport", Key="m/cisi-embed-v1/unirank_model.json")["Body"].read())
    assert marker["record"]["data_hash"] == "d4t4h45h"
    s3.put_object(Bucket="reexport", Key="n/cisi-embed-v1/notes.txt", Body=b"mine")
    with pytest.raises(ExportError, match="s3://reexport/n/cisi-embed-v1 already holds files that are not an export"):
        registry.export("cisi-embed@1", "s3://reexport/n", storage)


def test_identical_versions_are_found_by_their_files(registry, tmp_path):
    _version(registry)
    legacy = registry.register("cisi-embed", "embedder", path=BASE)
    with registry.db:  # as a version registered before the digest was recorded
        registry.db.execute("UPDATE versions SET record = '{}' WHERE version = 2")
    assert [v.ref for v in registry.identical_versions("cisi-embed", BASE)] == ["cisi-embed@1", legacy.ref]
    changed = tmp_path / "changed"
    shutil.copytree(BASE, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + "\n")
    assert registry.identical_versions("cisi-embed", changed) == []
    assert registry.identical_versions("other", BASE) == []


def test_cli_register_restores_an_export_and_says_what_it_cannot_read(tmp_path, monkeypatch):
    """`models register x --path s3://models/unirank/t1-embed-v1` said "s3:/models/… is not a folder"."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UNIRANK_CONFIG", "/dev/null")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "register", "x", "--path", "s3://models/unirank/t1-embed-v1",
                                  "--role", "embedder"])
    assert refused.exit_code == 2
    assert "s3://models/unirank/t1-embed-v1" in refused.output and "s3:/models" not in refused.output.replace(
        "s3://", "")
    assert "registering from object storage (s3://) is not supported" in " ".join(refused.output.split())

    registry = ModelRegistry(tmp_path / "data" / "models")
    _trained_version(registry)
    registry.close()
    assert runner.invoke(app, ["models", "export", "t1-embed@1", "--to", str(tmp_path / "out")]).exit_code == 0
    done = runner.invoke(app, ["models", "register", "reimp", "--path", str(tmp_path / "out" / "t1-embed-v1"),
                               "--role", "embedder"])
    assert done.exit_code == 0, done.output
    assert "From the export of t1-embed@1, with its record: its training queries' fingerprints" in " ".join(done.output.split())
    shown = json.loads(runner.invoke(app, ["models", "show", "reimp@1", "--json"]).output)
    assert shown["base_model"] == "all-MiniLM-L6-v2" and len(shown["training_queries"]) == 1
    bare = runner.invoke(app, ["models", "promote", "reimp", "--alias", "staging"])
    assert bare.exit_code == 2 and "reimp@VERSION" in bare.output
    # A registry version's own folder keeps that version's record: no warning that it carries none.
    own_folder = tmp_path / "data" / "models" / "t1-embed" / "v1"
    own = runner.invoke(app, ["models", "register", "own", "--path", str(own_folder), "--role", "embedder"])
    assert own.exit_code == 0 and "carries no record" not in own.output, own.output


def test_a_version_trained_from_another_before_bases_were_recorded_is_refused_on_the_bases_queries(registry):
    """Records written before a version carried its base's training queries name the base alone: the
    leakage check followed none, so a model tuned from t1 was scored on the queries t1 was trained on."""
    from unirank.errors import LeakageError
    from unirank.evaluation.leakage import check_no_leakage
    from unirank.training.examples import query_fingerprint

    t1 = _trained_version(registry, "t1-embed")
    older = registry.register("p4-embed", "embedder", path=BASE, record={
        "dims": 384, "base_model": t1.ref, "training_queries": [query_fingerprint("a question of p4's own")]})
    with pytest.raises(LeakageError, match="p4-embed@1 was trained on 1 of them"):
        check_no_leakage({"q1": TRAINED_QUERY}, [older], registry)
    check_no_leakage({"q1": TRAINED_QUERY}, [older])  # without the registry only its own queries are known
    # A record that says it carries its bases' queries already is not followed further.
    complete = registry.register("p5-embed", "embedder", path=BASE, record={
        "dims": 384, "base_model": t1.ref, "training_queries": [], "training_queries_inherited_from": []})
    check_no_leakage({"q1": TRAINED_QUERY}, [complete], registry)


def test_eval_pairs_a_name_s_embedder_with_the_reranker_trained_with_it(registry):
    """`--models tiny@3` paired tiny-embed@3 with tiny-rerank@3 by number: one embedder registered by
    hand made the next run's pair tiny-embed@4 + tiny-rerank@3, and tiny@3 scored (and recorded as
    tiny-rerank@3's figure) a pair never trained together."""
    from unirank.errors import UnirankError
    from unirank.evaluation.runner import resolve_specs

    def trained(run, timings):
        record = {"run_dir": f"/data/runs/tiny-{run}", "data_hash": run, "timings": {"total_s": timings}}
        e = registry.register("tiny-embed", "embedder", path=BASE, record=record)
        r = registry.register("tiny-rerank", "reranker", path=BASE, record=record)
        return e, r

    def pair(ref):
        (spec,) = resolve_specs([ref], registry)
        return spec.embedder, spec.reranker

    trained("a", 1.0)
    registry.register("tiny-embed", "embedder", path=BASE, record={"dims": 384})  # by hand: tiny-embed@2
    trained("b", 2.0)  # tiny-embed@3 + tiny-rerank@2
    trained("b", 3.0)  # the same run folder again (--fresh): tiny-embed@4 + tiny-rerank@3
    assert pair("tiny@1") == ("tiny-embed@1", "tiny-rerank@1")
    assert pair("tiny@3") == ("tiny-embed@3", "tiny-rerank@2")
    assert pair("tiny") == ("tiny-embed@4", "tiny-rerank@3")
    registry.promote("tiny-embed@3", "prod")
    assert pair("tiny@prod") == ("tiny-embed@3", "tiny-rerank@2")
    with pytest.raises(UnirankError, match=r"tiny-embed@2, but no version of tiny-rerank was trained with it.*"
                                           r"--models tiny-embed@2,tiny-rerank@VERSION"):
        resolve_specs(["tiny@2"], registry)
    # A run records each model's partner: that is the pair, whatever the run fields say.
    e = registry.register("tiny-embed", "embedder", path=BASE, record={"run_dir": "/data/runs/c", "timings": 1})
    r = registry.register("tiny-rerank", "reranker", path=BASE, record={"run_dir": "/data/runs/d",
                                                                        "trained_with": e.ref})
    registry.update_record(e.ref, trained_with=r.ref)
    assert pair(e.ref.replace("-embed", "")) == (e.ref, r.ref) == ("tiny-embed@5", "tiny-rerank@4")


def test_a_registry_folder_registered_under_another_name_keeps_its_training_queries(registry, tmp_path):
    """`models register copy-embed --path MODELS/t1-embed/v1` registered t1-embed@1's own files with no
    training queries (a version folder's marker carries no record), and `unirank eval --models copy-embed`
    scored it on the queries t1-embed@1 was trained on."""
    from unirank.errors import LeakageError
    from unirank.evaluation.leakage import check_no_leakage
    from unirank.registry.describe import registration_record

    t1 = _trained_version(registry)
    record, _ = registration_record(t1.path, "embedder")
    copy = registry.register("copy-embed", "embedder", path=t1.path, record=record)
    assert copy.record["training_queries"] == t1.record["training_queries"]
    assert copy.record["lineage"]["copy_of"] == "t1-embed@1"
    with pytest.raises(LeakageError, match="copy-embed@1 was trained on 1 of them"):
        check_no_leakage({"q1": TRAINED_QUERY, "q2": "an unseen question"}, [copy], registry)

    # Copied elsewhere first, the same; changed files are another model (as for a changed export).
    elsewhere = tmp_path / "v1-copy"
    shutil.copytree(t1.path, elsewhere)
    again = registry.register("copy2-embed", "embedder", path=elsewhere, record={"dims": 384})
    assert again.record["training_queries"] == t1.record["training_queries"]
    (elsewhere / "config.json").write_text((elsewhere / "config.json").read_text().replace("{", "{\n", 1))
    changed = registry.register("copy3-embed", "embedder", path=elsewhere, record={"dims": 384})
    assert "training_queries" not in changed.record and "lineage" not in changed.record


def test_a_run_s_final_folder_registered_under_another_name_or_trained_from_keeps_its_training_queries(settings,
                                                                                                       tmp_path):
    """`models register copy3 --path RUN/embedder/final` (the files of the version the run registered, with
    no marker) got no training queries, and `unirank eval --models copy3@1` scored it on the queries the
    run trained on; so did a model trained with `--base RUN/embedder/final`. Now the files are looked up
    under every name, deleted versions too."""
    from unirank.errors import LeakageError
    from unirank.evaluation.leakage import check_no_leakage
    from unirank.training.job import TrainJob, TrainRequest

    registry = ModelRegistry(settings.models_dir)
    t1 = _trained_version(registry)
    final = tmp_path / "run" / "embedder" / "final"
    shutil.copytree(t1.path, final, ignore=shutil.ignore_patterns("unirank_model.json"))
    copy = registry.register("copy3", "embedder", path=final, record={"dims": 384})
    assert copy.record["training_queries"] == t1.record["training_queries"]
    assert copy.record["training_queries_inherited_from"] == ["t1-embed@1"]
    assert copy.record["lineage"] == {"copy_of": "t1-embed@1"}
    with pytest.raises(LeakageError, match="copy3@1 was trained on 1 of them"):
        check_no_leakage({"q1": TRAINED_QUERY, "q2": "an unseen question"}, [copy], registry)

    job = TrainJob(settings, None, None, TrainRequest(name="next", index="handbook", base=str(final)))
    assert job._base_training_queries() == (set(t1.record["training_queries"]), ["t1-embed@1"])

    registry.delete(copy.ref)
    registry.delete(t1.ref)
    again = registry.register("copy4", "embedder", path=final, record={"dims": 384})
    assert again.record["training_queries"] == t1.record["training_queries"]
    registry.close()


@pytest.mark.parametrize("config", ["{bad json", "[1, 2]", b"\xff\xfe{}"])
def test_a_folder_whose_config_is_not_a_json_object_is_refused_as_such(tmp_path, config):
    """`models register --path DIR` with a damaged config.json ended in a JSONDecodeError traceback."""
    from unirank.errors import ModelLoadError
    from unirank.registry.describe import registration_record

    folder = tmp_path / "badcfg"
    folder.mkdir()
    (folder / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    with pytest.raises(ModelLoadError, match=r"config\.json (is not valid JSON|holds a JSON list)"):
        registration_record(folder, "embedder")


@pytest.mark.parametrize(("file", "content", "said"), [
    ("modules.json", b"{not json", "is not valid JSON"),
    ("modules.json", b"[1]", "holds a JSON list, not a list of objects"),
    ("modules.json", b'{"type": "Pooling"}', "holds a JSON dict, not a list of objects"),
    ("config_sentence_transformers.json", b"\xff\xfe", "is not valid JSON"),
    ("config_sentence_transformers.json", b"[]", "holds a JSON list, not an object"),
])
def test_a_folder_whose_sentence_transformers_files_are_damaged_is_refused_naming_the_file(tmp_path, file, content,
                                                                                           said):
    """`models register` ended in a JSONDecodeError, UnicodeDecodeError or AttributeError traceback."""
    from unirank.errors import ModelLoadError
    from unirank.registry.describe import registration_record

    folder = _base_files(tmp_path / "bad")
    (folder / file).write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"bad/{re.escape(file)} {said}.*Save the model again"):
        registration_record(folder, "embedder")


def test_an_empty_beir_file_or_a_file_for_the_folder_is_said_as_such(tmp_path):
    """An empty queries.jsonl or header-only qrels was reported as qrels naming no query by the ids of the
    queries file; `--beir DIR/corpus.jsonl` as a folder that does not exist."""
    from unirank.errors import EvaluationDataError, UnirankError
    from unirank.evaluation.datasets import EvalSet, load_beir

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a passage"}\n')
    (beir / "queries.jsonl").write_text("\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(EvaluationDataError, match=r"queries\.jsonl holds no queries"):
        load_beir(beir)
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a question"}\n')
    assert load_beir(beir).queries == {"q1": "a question"}  # training reads only the queries
    with pytest.raises(EvaluationDataError, match=r"qrels/test\.tsv holds no rows"):
        load_beir(beir).judged()
    with pytest.raises(EvaluationDataError, match="The qrels file holds no rows"):
        EvalSet(queries={"q1": "a question"}, qrels={}).judged()
    with pytest.raises(UnirankError, match=r"corpus\.jsonl is a file, not a BEIR folder"):
        load_beir(beir / "corpus.jsonl")
    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    judged = load_beir(beir).judged()
    assert judged.qrels == {"q1": {"d1": 1}} and judged.subset({"q1"}).qrels_path == beir / "qrels" / "test.tsv"
