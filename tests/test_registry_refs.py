"""Models named wrongly, or whose files are not what they should be: a cross-encoder folder given as the
embedder, a registration whose copy fails, a version whose folder was deleted, and references written
in the wrong form (NAME@ALIAS where the command takes NAME --alias ALIAS, NAME@vN for NAME@N)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conformance.backend_suite import source
from unirank.errors import ModelLoadError
from unirank.models.loading import resolve_model_path
from unirank.search.embedded.backend import EmbeddedBackend
from unirank.search.types import ModelSignature

BASE = Path(resolve_model_path("base")[0])
BASE_SIGNATURE = ModelSignature(name="all-MiniLM-L6-v2", version="base", dims=384)


@pytest.fixture(scope="module")
def cross_encoder_folder(tmp_path_factory) -> Path:
    """The base model saved as a cross-encoder (a reranker folder, as `unirank train` leaves one)."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path_factory.mktemp("ce") / "rerankmodel"
    CrossEncoder(str(BASE), num_labels=1, local_files_only=True).save_pretrained(str(folder))
    return folder


def _docs_index(settings) -> None:
    backend = EmbeddedBackend(settings.indexes_dir)
    backend.create_index("docs", BASE_SIGNATURE)
    backend.index("docs", [source("mem://a", ["Backups run nightly."], [np.eye(384, dtype=np.float32)[0]])])
    backend.flush("docs")
    backend.close()


def test_a_cross_encoder_folder_is_refused_as_the_model_of_a_rebuild(settings, cross_encoder_folder):
    """It loaded as a bi-encoder with a warning, and the index was re-embedded with vectors that mean nothing."""
    from unirank.api import Unirank

    _docs_index(settings)
    with Unirank(settings) as ur:
        with pytest.raises(ModelLoadError, match="is a cross-encoder .* not an embedder.*Give an embedder"):
            ur.rebuild_index("docs", str(cross_encoder_folder))
        assert ur.index_info("docs").model == BASE_SIGNATURE
    assert sorted(p.name for p in (settings.indexes_dir / "docs").glob("v*")) == ["v1"]


def test_a_cross_encoder_folder_is_refused_by_ingest_before_an_index_is_made(settings, cross_encoder_folder,
                                                                              tmp_path):
    from unirank.api import Unirank
    from unirank.errors import IndexNotFoundError

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Backups run nightly.")
    settings.embedder.model = str(cross_encoder_folder)
    with Unirank(settings) as ur:
        with pytest.raises(ModelLoadError, match=str(cross_encoder_folder.name)):
            ur.ingest(tmp_path / "docs", "ce")
        with pytest.raises(IndexNotFoundError):
            ur.index_info("ce")


def test_a_folder_that_cannot_be_copied_is_refused_naming_the_file_and_leaves_no_copy(tmp_path):
    """A dangling link in the folder: a raw shutil.Error traceback, and .incoming-* left in the registry."""
    from unirank.registry import ModelRegistry

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "dangling.bin").symlink_to(tmp_path / "gone")
    registry = ModelRegistry(tmp_path / "models")
    try:
        with pytest.raises(ModelLoadError, match=r"dangling\.bin.*Nothing was registered\. Fix or remove that file"):
            registry.register("x", "embedder", path=folder, record={})
        assert registry.list() == []
    finally:
        registry.close()
    assert list((tmp_path / "models").glob("*/.incoming-*")) == []


@pytest.fixture()
def gone(settings):
    """gone@1 registered, then its folder deleted by hand."""
    from conftest import register_base_copy

    register_base_copy(settings, "gone")
    shutil.rmtree(settings.models_dir / "gone" / "v1")
    return settings


def test_a_version_whose_folder_was_deleted_says_its_files_are_missing(gone):
    """It said "Path not found. Give a local model folder, `base`..." of the registry's own folder."""
    from unirank.models.loading import load_embedder

    gone.embedder.model = "gone@1"
    with pytest.raises(ModelLoadError, match=r"The files of gone@1 are missing from .*Restore the folder"):
        load_embedder(gone)


def test_a_version_whose_folder_was_deleted_is_not_promoted(gone):
    from unirank.errors import PromotionRefusedError
    from unirank.registry import ModelRegistry

    registry = ModelRegistry(gone.models_dir)
    try:
        with pytest.raises(PromotionRefusedError, match=r"The files of gone@1 are missing.*nothing was promoted"):
            registry.promote("gone@1", "prod")
        assert registry.history("gone", "prod") == []
    finally:
        registry.close()


def test_an_alias_is_not_rolled_back_to_a_version_whose_folder_was_deleted(tmp_path):
    """Promote refused the version, and rollback pointed prod at it: `serve models` then swapped to a model
    nothing could load."""
    from unirank.errors import PromotionRefusedError
    from unirank.registry import ModelRegistry

    folder = tmp_path / "emb"
    folder.mkdir()
    registry = ModelRegistry(tmp_path / "models")
    try:
        for version in (1, 2):
            (folder / "config.json").write_text(f'{{"v": {version}}}')
            registry.register("conc", "embedder", path=folder, record={"dims": 384})
            registry.promote(f"conc@{version}", "prod", force=True)
        shutil.rmtree(registry.get("conc@1").path)
        with pytest.raises(PromotionRefusedError, match=r"The files of conc@1 are missing from .*: nothing was rolled "
                                                        r"back \(conc@prod still names v2\)\. Restore the folder"):
            registry.rollback("conc", "prod")
        assert registry.get("conc@prod").version == 2
        assert [h["version"] for h in registry.history("conc", "prod")] == [1, 2]
    finally:
        registry.close()


def test_a_version_that_lost_a_file_is_not_promoted_rolled_back_to_exported_or_loaded(tmp_path):
    """Only a folder deleted or emptied was refused: with its weights removed by hand, c@1 was rolled back to,
    promoted and exported (with no weights), and ingest then failed loading it."""
    from unirank.errors import ExportError, PromotionRefusedError
    from unirank.models.loading import resolve_model_path
    from unirank.registry import ModelRegistry

    with ModelRegistry(tmp_path / "models") as registry:
        for version in (1, 2):
            registry.register("c", "embedder", path=BASE, record={"dims": 384})
            registry.promote(f"c@{version}", "prod", force=True)
        (registry.get("c@1").path / "model.safetensors").unlink()
        lost = r"1 of the files of c@1 are missing or changed in .*v1 \(e\.g\. model\.safetensors\)"
        with pytest.raises(PromotionRefusedError, match=lost + r": nothing was rolled back"):
            registry.rollback("c", "prod")
        with pytest.raises(PromotionRefusedError, match=lost + r": nothing was promoted"):
            registry.promote("c@1", "staging", force=True)
        with pytest.raises(ExportError, match=lost + r": nothing was exported"):
            registry.export("c@1", str(tmp_path / "out"))
        assert not (tmp_path / "out").exists()
        with pytest.raises(ModelLoadError, match=lost + r": it cannot be loaded"):
            resolve_model_path("c@1", registry.root)
        assert registry.get("c@prod").version == 2

        # A file cut short is a changed file; one added since is no loss.
        (registry.get("c@2").path / "tokenizer.json").write_text("{}")
        (registry.get("c@2").path / "NOTES.txt").write_text("kept beside the model")
        assert "e.g. tokenizer.json" in registry.get("c@2").files_missing()


def test_a_version_registered_before_file_listings_is_refused_without_config_or_weights(tmp_path):
    """Such a record has no listing to check against: what no model loads without is checked instead."""
    from unirank.registry import ModelRegistry

    with ModelRegistry(tmp_path / "models") as registry:
        registry.register("old", "embedder", path=BASE, record={"dims": 384})
        old = registry.change_record("old@1", lambda record: {k: v for k, v in record.items() if k != "files"})
        assert "files" not in old.record and old.files_missing() is None
        (old.path / "model.safetensors").unlink()
        assert old.files_missing() == f"1 of the files of old@1 are missing or changed in {old.path} " \
                                      "(e.g. model.safetensors)"
        for configuration in ("config.json", "modules.json"):
            (old.path / configuration).unlink()
        assert old.files_missing().startswith("2 of the files of old@1") and "(e.g. config.json)" in old.files_missing()


@pytest.fixture()
def emb_cli(settings, tmp_path, monkeypatch):
    """emb@1 (a small folder) promoted to prod, and a CliRunner's invoke on that registry."""
    from typer.testing import CliRunner

    from unirank.cli.main import app
    from unirank.registry import ModelRegistry

    folder = tmp_path / "emb"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry = ModelRegistry(settings.models_dir)
    try:
        registry.register("emb", "embedder", path=folder, record={"dims": 384})
        registry.promote("emb@1", "prod")
    finally:
        registry.close()
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "300")

    def invoke(*args: str):
        return CliRunner().invoke(app, ["models", *args])
    return invoke


def _said(result) -> str:
    return " ".join(result.output.split())


def test_rollback_of_name_at_alias_answers_with_the_form_it_takes(emb_cli):
    """It said "No model named 'emb@prod'"."""
    result = emb_cli("rollback", "emb@prod")
    assert result.exit_code == 2
    assert "`unirank models rollback emb --alias prod`" in _said(result)


def test_unalias_of_name_at_alias_or_without_an_alias_says_how_to_write_it(emb_cli):
    """typer stopped it at "Missing option '--alias'" before the code that answers NAME@ALIAS ran."""
    at = emb_cli("unalias", "emb@staging", "--yes")
    assert at.exit_code == 2
    assert "`unirank models unalias emb --alias staging`" in _said(at)
    bare = emb_cli("unalias", "emb", "--yes")
    assert bare.exit_code == 2
    assert "Name the alias to remove: `unirank models unalias emb --alias ALIAS` (its aliases are prod)" in _said(bare)
    assert emb_cli("show", "emb@prod").exit_code == 0  # nothing was removed


def test_name_at_v_number_asks_whether_the_version_number_was_meant(emb_cli):
    """It said "emb@v999 is not set. Promote a version with ... --alias v999"."""
    result = emb_cli("show", "emb@v999")
    assert result.exit_code == 2
    assert "emb@v999 is not set: did you mean emb@999? Versions are named by their number; emb has version 1" \
        in _said(result)
    assert "--alias v999" not in _said(result)


@pytest.mark.parametrize(("ref", "example"), [("emb@@1", "emb@1"), ("emb@1@2", "emb@1"), ("emb@@", "emb@1")])
def test_a_ref_with_two_ats_is_answered_with_a_real_example(emb_cli, ref, example):
    """`models show emb@@1` suggested `emb@`, itself no reference."""
    result = emb_cli("show", ref)
    assert result.exit_code == 2
    assert f"it has more than one '@'; use NAME, NAME@VERSION or NAME@ALIAS (e.g. {example})." in _said(result)


def test_an_alias_that_reads_like_a_version_is_refused(emb_cli):
    result = emb_cli("promote", "emb@1", "--alias", "v3")
    assert result.exit_code == 2
    assert "Invalid alias 'v3': it reads like a version" in _said(result)
    assert "v3" not in emb_cli("show", "emb@1", "--json").output


def test_each_registry_refusal_has_its_own_error_class(tmp_path):
    """They were all plain UnirankError: a library caller could tell a name the registry cannot take from an
    alias in the way of a delete only by reading the message."""
    from unirank.errors import (AliasInUseError, InvalidModelReferenceError, PromotionRefusedError,
                                RegistrationError, UnirankError)
    from unirank.registry import ModelRegistry

    folder = tmp_path / "emb"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry = ModelRegistry(tmp_path / "models")
    try:
        registry.register("emb", "embedder", path=folder, record={"dims": 384})
        registry.promote("emb@1", "prod")
        refusals = [
            (RegistrationError, lambda: registry.register("bad name", "embedder", path=folder, record={})),
            (RegistrationError, lambda: registry.register("base", "embedder", path=folder, record={})),
            (RegistrationError, lambda: registry.register("emb", "reranker", path=folder, record={})),
            (RegistrationError, lambda: registry.check_not_identical("emb", folder)),  # as `models register` asks
            (RegistrationError, lambda: registry.register("x", "embedder", path=tmp_path / "none", record={})),
            (InvalidModelReferenceError, lambda: registry.delete("emb@prod")),
            (InvalidModelReferenceError, lambda: registry.promote("emb", "prod")),
            (InvalidModelReferenceError, lambda: registry.promote("emb@1", "v2")),
            (AliasInUseError, lambda: registry.delete("emb@1")),
        ]
        for error, refused in refusals:
            with pytest.raises(error) as caught:
                refused()
            assert type(caught.value) is error and not isinstance(caught.value, PromotionRefusedError)
            assert isinstance(caught.value, UnirankError)
        assert [v.ref for v in registry.list()] == ["emb@1"]
    finally:
        registry.close()
