"""Ingestion from S3-compatible object storage, against a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import pytest

from serving_helpers import free_port
from unirank.errors import SourceError
from unirank.settings import StorageSettings

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sample-docs"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture()
def bucket(s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="handbook")
    for path in SAMPLES.glob("*.md"):
        s3.upload_file(str(path), "handbook", f"policies/{path.name}")
    s3.put_object(Bucket="handbook", Key="policies/faq.jsonl", Body=(SAMPLES / "faq.jsonl").read_bytes())
    s3.put_object(Bucket="handbook", Key="other/ignored.md", Body=b"# Not under the prefix")
    s3.put_object(Bucket="handbook", Key="policies/.trash/old.md", Body=b"# Old\n\nDeleted in the UI.")  # hidden
    yield s3
    for obj in s3.list_objects_v2(Bucket="handbook").get("Contents", []):
        s3.delete_object(Bucket="handbook", Key=obj["Key"])
    s3.delete_bucket(Bucket="handbook")


def test_ingest_from_s3_prefix_incrementally(client, bucket, s3_endpoint):
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    report = client.ingest("s3://handbook/policies", "s3docs")
    assert sorted(report.ingested) == ["s3://handbook/policies/api-keys.md", "s3://handbook/policies/backups.md",
                                       "s3://handbook/policies/faq.jsonl"]
    hit = client.search("rotation overlap window", "s3docs", top_k=1).hits[0]
    assert hit.chunk.source_uri == "s3://handbook/policies/api-keys.md"

    bucket.put_object(Bucket="handbook", Key="policies/backups.md", Body=b"# Backups\n\nBackups run nightly now.")
    bucket.delete_object(Bucket="handbook", Key="policies/faq.jsonl")
    again = client.ingest("s3://handbook/policies", "s3docs", prune=True)
    assert again.ingested == ["s3://handbook/policies/backups.md"]
    assert again.pruned == ["s3://handbook/policies/faq.jsonl"]
    assert ("s3://handbook/policies/api-keys.md", "unchanged") in again.skipped
    assert "nightly" in client.search("backups", "s3docs", mode="bm25", rerank=False).hits[0].chunk.text


def test_ingest_from_oss_uri_through_the_s3_compatible_endpoint(client, bucket, s3_endpoint):
    client.settings.storage = StorageSettings(oss_endpoint_url=s3_endpoint, oss_addressing_style="path", **KEYS)
    report = client.ingest("oss://handbook/policies/api-keys.md", "ossdocs")
    assert report.ingested == ["oss://handbook/policies/api-keys.md"]
    assert client.index_info("ossdocs").chunk_count >= 1


def test_oss_without_endpoint_is_a_clear_error(client):
    with pytest.raises(SourceError, match="oss_endpoint_url"):
        client.ingest("oss://handbook/policies", "ossdocs")


def test_missing_bucket_is_reported(client, bucket, s3_endpoint):
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    no_bucket = rf"does not exist: {s3_endpoint} has no bucket 'no-such-bucket'\. Check the bucket name and " \
                r"storage\.endpoint_url \(UNIRANK_STORAGE__ENDPOINT_URL\)\.$"
    with pytest.raises(SourceError, match=rf"^s3://no-such-bucket/x {no_bucket}"):
        client.ingest("s3://no-such-bucket/x", "s3docs")
    with pytest.raises(SourceError, match=rf"^s3://no-such-bucket {no_bucket}"):
        client.ingest("s3://no-such-bucket", "s3docs")
    with pytest.raises(SourceError, match=rf"^s3://handbook/nothing does not exist at {s3_endpoint}\. Check the path"):
        client.ingest("s3://handbook/nothing", "s3docs")
    assert not client.backend.exists("s3docs")


@pytest.fixture()
def web_server(tmp_path):
    """A plain web server (as `python -m http.server`): it answers 404 to every S3 request, without an S3 error."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_endpoint_that_is_not_s3_is_not_reported_as_a_missing_bucket(client, web_server):
    """A wrong endpoint answering 404 was said as "s3://docs/hb does not exist. Check the path or bucket name."."""
    client.settings.storage = StorageSettings(endpoint_url=web_server, oss_endpoint_url=web_server,
                                              oss_addressing_style="path", **KEYS)
    for uri, setting in (("s3://docs/hb", r"storage\.endpoint_url \(UNIRANK_STORAGE__ENDPOINT_URL\)"),
                         ("s3://docs", r"storage\.endpoint_url"), ("oss://docs/hb/", r"storage\.oss_endpoint_url")):
        with pytest.raises(SourceError, match=rf"^Cannot list {uri}: {web_server} answered 404 without an S3 "
                                              rf"error, so it is not an S3 endpoint \(or not this storage's\)\. "
                                              rf"Check {setting}"):
            client.ingest(uri, "s3docs")
    assert not client.backend.exists("s3docs")


def test_an_unreachable_endpoint_is_not_reported_as_a_missing_bucket(client):
    client.settings.storage = StorageSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", **KEYS)
    with pytest.raises(SourceError, match=r"Cannot list s3://handbook: Could not connect"):
        client.ingest("s3://handbook", "s3docs")
    assert not client.backend.exists("s3docs")


def test_object_keys_keep_spaces_percent_signs_and_url_characters(client, bucket, s3_endpoint):
    """An object's URI carries its key as it is: '?' and '#' are not a query and a fragment, '%20' is not a space,
    and '?versionId=' is not s3fs's object version (v.md?versionId=2.md was read as v.md)."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    keys = ("odd/Travel policy 2024.md", "odd/q?and#hash.md", "odd/literal%20percent.md", "odd/naïve résumé.txt",
            "odd/v.md", "odd/v.md?versionId=2.md")
    for n, key in enumerate(keys):
        bucket.put_object(Bucket="handbook", Key=key, Body=f"Document number {n} about llamas{n}.".encode())
    report = client.ingest("s3://handbook/odd", "odd")
    assert report.failed == [] and sorted(report.ingested) == sorted(f"s3://handbook/{k}" for k in keys)
    for n, key in enumerate(keys):
        hit = client.search(f"llamas{n}", "odd", mode="bm25", rerank=False, top_k=1).hits[0]
        assert hit.chunk.source_uri == f"s3://handbook/{key}" and hit.chunk.title == key[4:].rsplit(".", 1)[0]
    one = client.ingest("s3://handbook/odd/v.md?versionId=2.md", "one")  # the object named, not v.md
    assert one.ingested == ["s3://handbook/odd/v.md?versionId=2.md"]
    assert "llamas5" in client.search("llamas5", "one", mode="bm25", rerank=False).hits[0].chunk.text


def test_a_prefix_of_no_documents_is_said_and_creates_no_index(client, bucket, s3_endpoint):
    """It made an empty index and exited 0."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    bucket.put_object(Bucket="handbook", Key="exports/sales.csv", Body=b"a,b\n")
    with pytest.raises(SourceError, match=r"No documents found in s3://handbook/exports \(only files of other "
                                          r"types: \.csv\)"):
        client.ingest("s3://handbook/exports", "s3docs")
    assert not client.backend.exists("s3docs")


@pytest.fixture()
def no_aws_credentials(monkeypatch, tmp_path):
    """No AWS_* variables, profile or instance metadata: only the settings give credentials."""
    import os

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


SETTINGS_NAMED = r"storage\.access_key_id and storage\.secret_access_key \(UNIRANK_STORAGE__ACCESS_KEY_ID"


def test_missing_or_half_given_credentials_name_the_settings_to_set(client, bucket, s3_endpoint, no_aws_credentials,
                                                                     monkeypatch):
    """botocore's "Unable to locate credentials" and "Partial credentials found…" named no setting."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(SourceError, match=rf"Cannot list s3://handbook/policies: no credentials were found\. "
                                          rf"Set {SETTINGS_NAMED}.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        client.ingest("s3://handbook/policies", "s3docs")
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, region="us-east-1", access_key_id="testing")
    with pytest.raises(SourceError, match=r"storage\.access_key_id is set but storage\.secret_access_key is not: "
                                          r"set both \(UNIRANK_STORAGE__ACCESS_KEY_ID and "
                                          r"UNIRANK_STORAGE__SECRET_ACCESS_KEY\)"):
        client.ingest("s3://handbook/policies", "s3docs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # half of the AWS pair
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(SourceError, match=rf"the credentials are incomplete \(.*\)\. Set {SETTINGS_NAMED}"):
        client.ingest("s3://handbook/policies", "s3docs")
    assert not client.backend.exists("s3docs")


def test_rejected_credentials_are_said_to_be_rejected(client, no_aws_credentials):
    """Wrong keys said only "Cannot list s3://docs/corp: Forbidden"."""
    import httpx
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=url, **{f"aws_{k}": v for k, v in KEYS.items() if k != "region"},
                     region_name="us-east-1").create_bucket(Bucket="docs")
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()  # check keys from now on
        client.settings.storage = StorageSettings(endpoint_url=url, region="us-east-1", access_key_id="wrong",
                                                  secret_access_key="wrong")
        with pytest.raises(SourceError, match=r"Cannot list s3://docs/corp: access denied \(403 InvalidAccessKeyId: "
                                              r"The AWS Access Key Id you provided does not exist in our records\): "
                                              rf"the storage rejected the credentials.*Set {SETTINGS_NAMED}"):
            client.ingest("s3://docs/corp", "s3docs")
    finally:  # moto's auth switch is one for the process: the other tests' servers take any keys again
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf").raise_for_status()
        server.stop()


def test_folder_markers_are_not_files(client, bucket, s3_endpoint):
    """A console's "create folder" makes an empty key ending in '/': it was reported as "skipped
    folder_marker: unsupported file type", and a prefix holding only one was not said to be empty."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    for key in ("policies/", "policies/drafts/", "empty/"):
        bucket.put_object(Bucket="handbook", Key=key, Body=b"")
    report = client.ingest("s3://handbook/policies", "s3docs")
    assert report.skipped == [] and report.failed == [] and report.files_seen == 3
    with pytest.raises(SourceError, match=r"No documents found in s3://handbook/empty\. "):
        client.ingest("s3://handbook/empty", "s3docs")


@pytest.mark.parametrize("uri", ["s3://", "oss://", "s3:///policies"])
def test_an_object_uri_without_a_bucket_is_refused(client, tmp_path, monkeypatch, uri):
    """`ingest s3://` ingested a local folder named "s3:" (or said it did not exist), and `index remove IDX s3://`
    looked for documents under it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / uri.split("//")[0]).mkdir()
    (tmp_path / uri.split("//")[0] / "a.md").write_text("# A\n\nNot in a bucket.")
    scheme = uri.split(":")[0]
    with pytest.raises(SourceError, match=rf"^{scheme}:// needs a bucket: {scheme}://bucket/prefix$"):
        client.ingest(uri, "s3docs")
    with pytest.raises(SourceError, match="needs a bucket"):
        client.sources_under("s3docs", uri)
    assert not client.backend.exists("s3docs")


def test_index_remove_needs_no_storage_settings(client, bucket, s3_endpoint):
    """`index remove IDX oss://... --yes` never reads the storage, yet it was refused for a missing
    storage.oss_endpoint_url or half a key pair: the source built its filesystem before looking at the URI."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, oss_endpoint_url=s3_endpoint,
                                              oss_addressing_style="path", **KEYS)
    client.ingest("s3://handbook/policies/api-keys.md", "s3docs")
    client.ingest("oss://handbook/policies/backups.md", "s3docs")
    for storage in (StorageSettings(), StorageSettings(access_key_id="only-half")):
        client.settings.storage = storage
        assert client.sources_under("s3docs", "oss://handbook/policies") == ["oss://handbook/policies/backups.md"]
        assert client.sources_under("s3docs", "s3://handbook") == ["s3://handbook/policies/api-keys.md"]
    with pytest.raises(SourceError, match="oss_endpoint_url"):  # reading still needs them
        client.ingest("oss://handbook/policies", "s3docs")


def test_a_trailing_slash_names_the_prefix_and_no_slash_the_object_and_the_prefix(client, bucket, s3_endpoint):
    """Where an object `notes` and objects under `notes/` both exist, s3://b/notes/ read the object `notes`
    alone (the slash was dropped and the object looked up first), and s3://b/notes did too, though --prune
    and `index remove` take notes/a.md as under it."""
    from unirank.ingest.sources import DocumentSource

    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    for key in ("notes", "notes/a.md", "notes/b.md"):
        bucket.put_object(Bucket="handbook", Key=key, Body=f"# {key}\n\nThe {key} text.".encode())
    report = client.ingest("s3://handbook/notes/", "s3docs")
    assert report.files_seen == 2 and report.skipped == []
    assert sorted(report.ingested) == ["s3://handbook/notes/a.md", "s3://handbook/notes/b.md"]
    report = client.ingest("s3://handbook/notes", "s3docs", prune=True)
    assert report.files_seen == 3 and report.pruned == [] and report.ingested == []
    assert ("s3://handbook/notes", "unsupported file type '(none)'") in report.skipped
    uris = ["s3://handbook/notes", "s3://handbook/notes/a.md", "s3://handbook/notes-old/c.md"]
    assert DocumentSource("s3://handbook/notes/").under(uris) == ["s3://handbook/notes/a.md"]
    assert DocumentSource("s3://handbook/notes").under(uris) == uris[:2]
    with pytest.raises(SourceError, match=r"s3://handbook/policies/api-keys\.md/ is not a folder: s3://handbook/"
                                          r"policies/api-keys\.md is an object.*Drop the trailing slash"):
        client.ingest("s3://handbook/policies/api-keys.md/", "s3docs")
    assert client.ingest("s3://handbook/policies/api-keys.md", "s3docs").ingested == [
        "s3://handbook/policies/api-keys.md"]


def test_an_endpoint_that_never_answers_fails_in_seconds_naming_it():
    """An endpoint that accepts connections and never answers kept `ingest` silent ~7 minutes: botocore's
    60 s wait, 5 attempts, inside s3fs's 5 tries. The waits and attempts are the storage settings', bounded
    by default, and said with the setting to raise."""
    import socket
    import time

    from unirank.ingest.sources import DocumentSource, SourceFile, filesystem_for

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nothing reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        storage = StorageSettings(endpoint_url=url, connect_timeout_s=0.5, read_timeout_s=0.5, attempts=2, **KEYS)
        docs = DocumentSource("s3://docs/hb", storage)
        said = rf"^{url} did not answer within 0\.5 s \(2 attempts\)\. Check storage\.endpoint_url " \
               r"\(UNIRANK_STORAGE__ENDPOINT_URL\) and that the storage is up; for a slow one, raise " \
               r"storage\.read_timeout_s \(UNIRANK_STORAGE__READ_TIMEOUT_S\)\.$"
        started = time.monotonic()
        with pytest.raises(SourceError, match=said.replace("^", "^Cannot list s3://docs/hb: ")):
            docs.list()
        with pytest.raises(SourceError, match=said):  # a read fails as the storage's, not as the file's
            docs.read(SourceFile(uri="s3://docs/hb/a.md", size=1, modified=""))
        assert time.monotonic() - started < 8
    defaults = StorageSettings(endpoint_url=url, **KEYS)
    # Every caller gets the settings it passes: ingest and `index remove` (DocumentSource), and
    # `models export` (filesystem_for).
    for fs, limits in ((DocumentSource("s3://docs/hb", defaults).fs, (10, 30, 3)),
                       (filesystem_for("s3://docs/hb", defaults).fs, (10, 30, 3)),
                       (filesystem_for("oss://docs/hb", StorageSettings(
                           oss_endpoint_url=url, connect_timeout_s=2, read_timeout_s=90, attempts=1)).fs, (2, 90, 1))):
        config = fs.config_kwargs
        assert fs.retries == 1
        assert (config["connect_timeout"], config["read_timeout"], config["retries"]["total_max_attempts"]) == limits


def test_models_export_words_storage_errors_as_ingest_does(tmp_path, bucket, s3_endpoint, monkeypatch):
    """`models export` to an endpoint that never answered said "Cannot reach s3://models: Read timeout on endpoint
    URL ... Check the storage settings (storage.endpoint_url, credentials)", not the setting to raise as ingest
    does; oss:// was told to check storage.endpoint_url. One helper in the sources words both."""
    import socket
    import time

    from botocore.exceptions import ReadTimeoutError

    import unirank.registry.export as export
    from unirank.errors import ExportError

    mv = _model_version(tmp_path / "m")  # a configuration and weights: a version that lost them is refused first
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nothing reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        for scheme, setting, storage in (
                ("s3", "endpoint_url", StorageSettings(endpoint_url=url, read_timeout_s=0.5, attempts=2, **KEYS)),
                ("oss", "oss_endpoint_url", StorageSettings(oss_endpoint_url=url, oss_addressing_style="path",
                                                            read_timeout_s=0.5, attempts=2, **KEYS))):
            with pytest.raises(ExportError, match=(
                    rf"^Cannot reach {scheme}://models: {url} did not answer within 0\.5 s \(2 attempts\)\. Check "
                    rf"storage\.{setting} \(UNIRANK_STORAGE__{setting.upper()}\) and that the storage is up; for "
                    r"a slow one, raise storage\.read_timeout_s \(UNIRANK_STORAGE__READ_TIMEOUT_S\)\. Nothing was "
                    r"exported; export again once it is fixed\.$")):
                export.export_version(mv, f"{scheme}://models/team", storage)
        assert time.monotonic() - started < 8
    # Failing partway, after the bucket answered, is worded the same way.
    storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)

    def times_out(*args, **kwargs):
        raise ReadTimeoutError(endpoint_url=f"{s3_endpoint}/handbook/team/m-v1/model.safetensors")

    monkeypatch.setattr(export, "_export_to_objects", times_out)
    with pytest.raises(ExportError, match=rf"^Exporting m@1 to s3://handbook/team/m-v1 failed: {s3_endpoint} did "
                                          r"not answer within 30 s \(3 attempts\)\. .* raise storage\.read_timeout_s"):
        export.export_version(mv, "s3://handbook/team", storage)


def test_models_export_refusals_name_the_destination(tmp_path):
    """An empty or unsupported `models export --to` was called "the source", a word of ingest."""
    from unirank.registry.export import export_version

    mv = _model_version(tmp_path / "m")  # a configuration and weights: a version that lost them is refused first
    with pytest.raises(SourceError, match=r"^The export destination \(--to\) must be a folder, .* got ''\.$"):
        export_version(mv, "")
    with pytest.raises(SourceError, match=r"^Unsupported export destination \(--to\) 'gs://b/x': use a local path"):
        export_version(mv, "gs://b/x")


def test_a_storage_outage_partway_stops_the_run_and_keeps_what_was_read(client):
    """Storage that went down partway failed each remaining file as its own, each after the timeouts, and one
    indexed before was said to need fixing ("fix the file, or remove it and use --prune"). The run stops, as
    for an embedder that goes down, with what it read before written. A missing object stays its own failure."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # killed: every connection drops
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto did not start"
                time.sleep(0.05)
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="outage")
        for i in range(6):
            s3.put_object(Bucket="outage", Key=f"p/f{i}.md", Body=f"# F{i}\n\nDocument {i} about walrus{i}.".encode())
        client.settings.storage = StorageSettings(endpoint_url=url, connect_timeout_s=1, read_timeout_s=1,
                                                  attempts=1, **KEYS)
        uris = [f"s3://outage/p/f{i}.md" for i in range(6)]
        killed: list[float] = []

        def outage(done: int, total: int, uri: str) -> None:
            if done == 1:
                s3.delete_object(Bucket="outage", Key="p/f2.md")  # listed, then gone: its own failure
            if done == 3:
                moto.kill()
                moto.wait()
                killed.append(time.monotonic())

        report = client.ingest("s3://outage/p", "s3docs", progress=outage)
        assert time.monotonic() - killed[0] < 5
    finally:
        moto.kill()
        moto.wait()
    assert report.ingested == uris[:2] and not report.ok
    assert [uri for uri, _ in report.failed] == [uris[2]]  # the missing object; none after the outage
    assert report.stopped.startswith(f"The storage failed while reading {uris[3]}, so the run stopped with 3 files "
                                     f"of 6 not read: ")
    assert report.stopped.endswith(". A re-run skips the files already ingested.")
    assert client.sources_under("s3docs", "s3://outage") == uris[:2]  # written, though no batch had filled
    assert client.search("walrus1", "s3docs", mode="bm25", rerank=False).hits[0].chunk.source_uri == uris[1]


def _model_version(folder: Path, name: str = "m", version: int = 1):
    from unirank.registry.store import ModelVersion

    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        (folder / file).write_bytes(f"{file} of {name}@{version}".encode())
    return ModelVersion(name=name, version=version, role="embedder", path=folder, created_at="2024-01-01T00:00:00Z")


def test_an_export_to_object_storage_that_failed_partway_is_exported_again(tmp_path, bucket, s3_endpoint, monkeypatch):
    """An export that failed partway said to export again, and exporting again was refused: the earlier marker was
    deleted before the upload, and a prefix with no marker read as someone else's files ("pass --force")."""
    import json

    import s3fs
    from botocore.exceptions import EndpointConnectionError

    import unirank.registry.export as export
    from unirank.errors import ExportError

    storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    mv = _model_version(tmp_path / "m")
    put_file = s3fs.S3FileSystem.put_file

    def keys(prefix: str) -> list[str]:
        return sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="handbook", Prefix=prefix).get("Contents", []))

    def export_dropped_at_upload(upload: int) -> None:
        uploads: list[str] = []

        def drops(self, lpath, rpath, *args, **kwargs):
            uploads.append(rpath)
            if len(uploads) == upload:
                raise EndpointConnectionError(endpoint_url=f"{s3_endpoint}/{rpath}")
            return put_file(self, lpath, rpath, *args, **kwargs)

        with monkeypatch.context() as patched:
            patched.setattr(s3fs.S3FileSystem, "put_file", drops)
            with pytest.raises(ExportError, match=r"^Exporting m@1 to s3://handbook/team/m-v1 failed: .*export again"):
                export.export_version(mv, "s3://handbook/team", storage)

    whole = ["team/m-v1/1_Pooling/config.json", "team/m-v1/config.json", "team/m-v1/model.safetensors",
             "team/m-v1/tokenizer.json", "team/m-v1/unirank_model.json"]
    export_dropped_at_upload(3)  # a first export
    assert "team/m-v1/unirank_model.json" not in keys("team/")
    assert export.export_version(mv, "s3://handbook/team", storage) == "s3://handbook/team/m-v1"
    assert keys("team/") == whole
    export_dropped_at_upload(2)  # over a whole earlier export
    assert export.export_version(mv, "s3://handbook/team", storage) == "s3://handbook/team/m-v1"
    assert keys("team/") == whole
    marker = json.loads(bucket.get_object(Bucket="handbook", Key="team/m-v1/unirank_model.json")["Body"].read())
    assert (marker["name"], marker["version"]) == ("m", 1)

    # Files that are no export of m@1 are still refused: another's, and another version's export left partway.
    bucket.put_object(Bucket="handbook", Key="mine/m-v1/notes.txt", Body=b"mine")
    bucket.put_object(Bucket="handbook", Key="half/m-v1/unirank_model.exporting.json",
                      Body=json.dumps({"name": "other", "version": 1}).encode())
    for prefix in ("mine", "half"):
        with pytest.raises(ExportError, match=rf"^s3://handbook/{prefix}/m-v1 already holds files that are not an "
                                              r"export of m@1 .*--force"):
            export.export_version(mv, f"s3://handbook/{prefix}", storage)
    assert keys("mine/") == ["mine/m-v1/notes.txt"]


@pytest.fixture()
def scoped_keys(no_aws_credentials):
    """A moto server that checks keys and policies, with a bucket `scoped` (corp/a.md, corp/b.md, secret.md) and
    keys of three users: `reader` may list the bucket and read corp/* alone, `lister` may list it and read nothing,
    `team` may list it (and the missing bucket `gone`) and read, write and delete team/* alone, but not HEAD the
    bucket. Yields a client that may write the bucket, and each user's storage settings."""
    import json

    import httpx
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    admin = {"endpoint_url": url, "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
             "region_name": "us-east-1"}
    s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
    s3.create_bucket(Bucket="scoped")
    for key in ("corp/a.md", "corp/b.md", "secret.md"):
        s3.put_object(Bucket="scoped", Key=key, Body=f"# {key}\n\nThe text of {key}.".encode())
    # moto asks for s3:ListObjectsV2 where AWS asks for s3:ListBucket; a HEAD needs s3:GetObject on both.
    may_list = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListObjectsV2"], "Resource": "arn:aws:s3:::scoped"}
    may_read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::scoped/corp/*"}
    # AWS authorises a HeadBucket as an s3:ListBucket without s3:prefix, which this condition denies; moto asks for
    # s3:HeadBucket (and does not read conditions): `team` is denied it either way. A HeadObject, which AWS
    # authorises as s3:GetObject, is moto's s3:HeadObject.
    team_lists = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListObjectsV2"],
                  "Resource": ["arn:aws:s3:::scoped", "arn:aws:s3:::gone"],
                  "Condition": {"StringLike": {"s3:prefix": ["team/*"]}}}
    team_writes = {"Effect": "Allow", "Action": ["s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:DeleteObject"],
                   "Resource": "arn:aws:s3:::scoped/team/*"}
    users = {}
    may_write = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    for user, statements in (("reader", [may_list, may_read]), ("lister", [may_list]),
                             ("team", [team_lists, team_writes]), ("writer", [may_write])):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="scoped", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        users[user] = StorageSettings(endpoint_url=url, region="us-east-1", access_key_id=key["AccessKeyId"],
                                      secret_access_key=key["SecretAccessKey"])
    writer = users.pop("writer")
    httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()  # check keys from now on
    try:
        yield boto3.client("s3", endpoint_url=url, aws_access_key_id=writer.access_key_id, region_name="us-east-1",
                           aws_secret_access_key=writer.secret_access_key), users
    finally:  # moto's auth switch and its accounts are one for the process: the other tests' servers meet neither
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf").raise_for_status()
        for user in (*users, "writer"):
            iam.delete_user_policy(UserName=user, PolicyName="scoped")
            for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            iam.delete_user(UserName=user)
        for obj in s3.list_objects_v2(Bucket="scoped").get("Contents", []):
            s3.delete_object(Bucket="scoped", Key=obj["Key"])
        s3.delete_bucket(Bucket="scoped")
        server.stop()


def test_a_prefix_without_a_slash_is_read_with_keys_that_may_read_only_under_it(client, scoped_keys):
    """`ingest s3://scoped/corp` looked for an object named `corp` too, and the 403 of that look (outside the policy)
    failed the run as "access denied ... may not list this bucket"; `s3://scoped/corp/` worked."""
    _, users = scoped_keys
    client.settings.storage = users["reader"]
    for uri in ("s3://scoped/corp", "s3://scoped/corp/"):
        report = client.ingest(uri, "corp")
        assert report.failed == [] and report.files_seen == 2
    assert sorted(client.sources_under("corp", "s3://scoped")) == ["s3://scoped/corp/a.md", "s3://scoped/corp/b.md"]
    with pytest.raises(SourceError, match=r"^Cannot list s3://scoped/secret\.md: access denied \(403 "):
        client.ingest("s3://scoped/secret.md", "corp")  # an object they may not look at is not said to be missing


def test_an_object_the_keys_may_not_read_is_said_to_be_denied_naming_the_settings(client, scoped_keys):
    """A 403 reading an object was reported as "cannot read: Access Denied", naming no permission or setting."""
    s3, users = scoped_keys
    denied = (r"^cannot read: access denied \(403 AccessDenied: Access Denied\): the storage rejected the credentials, "
              rf"or they may not read this object \(s3:GetObject\)\. Check the keys and their permissions\. "
              rf"Set {SETTINGS_NAMED}")
    client.settings.storage = users["lister"]
    report = client.ingest("s3://scoped/corp/", "corp")
    assert [uri for uri, _ in report.failed] == ["s3://scoped/corp/a.md", "s3://scoped/corp/b.md"]
    assert all(re.match(denied, reason) for _, reason in report.failed), report.failed
    client.settings.storage = users["reader"]
    assert client.ingest("s3://scoped/corp/", "corp").ingested == ["s3://scoped/corp/a.md", "s3://scoped/corp/b.md"]
    s3.put_object(Bucket="scoped", Key="corp/a.md", Body=b"# A\n\nChanged since.")
    client.settings.storage = users["lister"]
    report = client.ingest("s3://scoped/corp/", "corp")
    assert [uri for uri, _ in report.failed] == ["s3://scoped/corp/a.md"]  # b.md is unchanged: not read
    assert re.match(denied, report.failed[0][1]) and "the previous version stays indexed" in report.failed[0][1]


def test_keys_with_dot_segments_are_documents_not_hidden_files(client, bucket, s3_endpoint):
    """`odd/./c.md` and `odd/a/../b.md` were passed over without a word, as hidden files: a `.` or `..` segment of
    an object key is part of its name (S3 keys are not paths), and each is read by its own key."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    keys = ("dots/./c.md", "dots/a/../b.md", "dots/../up.md", "dots/b.md")
    for n, key in enumerate(keys):
        bucket.put_object(Bucket="handbook", Key=key, Body=f"# Note {n}\n\nDocument {n} about okapis{n}.".encode())
    bucket.put_object(Bucket="handbook", Key="dots/.hidden.md", Body=b"# Hidden\n\nStill passed over.")
    report = client.ingest("s3://handbook/dots", "dots")
    assert report.failed == [] and report.skipped == [] and report.files_seen == 4
    assert sorted(report.ingested) == sorted(f"s3://handbook/{key}" for key in keys)
    for n, key in enumerate(keys):  # its own text, not that of the key it would name as a path (dots/b.md)
        hit = client.search(f"okapis{n}", "dots", mode="bm25", rerank=False, top_k=1).hits[0]
        assert hit.chunk.source_uri == f"s3://handbook/{key}" and f"okapis{n}" in hit.chunk.text


def test_a_warning_names_the_object_by_its_uri(client, bucket, s3_endpoint):
    """A warning for s3://handbook/warn/fm.md was said for `handbook/warn/fm.md`, its scheme lost."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    bucket.put_object(Bucket="handbook", Key="warn/fm.md", Body=b"---\ntitle: [unclosed\n---\n# Notes\n\nThe body.")
    report = client.ingest("s3://handbook/warn", "warn")
    assert report.ingested == ["s3://handbook/warn/fm.md"]
    assert [w.split(": ", 1)[0] for w in report.warnings] == ["s3://handbook/warn/fm.md"], report.warnings


#: The keys an export of `_model_version`'s m@1 under PREFIX holds, its marker included.
EXPORTED = ("m-v1/1_Pooling/config.json", "m-v1/config.json", "m-v1/model.safetensors", "m-v1/tokenizer.json",
            "m-v1/unirank_model.json")


def _keys(s3, prefix: str, bucket: str = "handbook") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_export_with_force_deletes_exactly_the_stale_keys_of_its_destination(tmp_path, bucket, s3_endpoint):
    """`models export --force` deleted the stale keys as glob patterns (s3fs's rm): to s3://handbook/team[1] it
    deleted team1/m-v1/old.txt, outside the destination, and kept the stale team[1]/m-v1/old.txt and notes[1].txt;
    a stale `config*` deleted the export's own config.json after it was written, and the marker said it was whole."""
    from unirank.registry.export import export_version

    storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    mv = _model_version(tmp_path / "m")
    for key in ("team1/m-v1/old.txt", "team[1]/m-v1/old.txt", "team[1]/m-v1/notes[1].txt", "glob/m-v1/config*"):
        bucket.put_object(Bucket="handbook", Key=key, Body=b"stale")
    assert export_version(mv, "s3://handbook/team[1]", storage, force=True) == "s3://handbook/team[1]/m-v1"
    assert _keys(bucket, "team1/") == ["team1/m-v1/old.txt"]
    assert _keys(bucket, "team[1]/") == [f"team[1]/{key}" for key in EXPORTED]
    export_version(mv, "s3://handbook/glob", storage, force=True)
    assert _keys(bucket, "glob/") == [f"glob/{key}" for key in EXPORTED]


def test_models_export_works_with_keys_that_may_list_and_write_only_under_the_destination(tmp_path, scoped_keys):
    """`models export --to s3://scoped/team` was refused as "Cannot reach s3://scoped: access denied" for keys that
    may list, write and delete under team/ alone: it asked for a HeadBucket first, to tell a missing bucket, which
    such keys may not make. A missing bucket is still said to be missing, by the listing."""
    from unirank.errors import ExportError
    from unirank.registry.export import export_version

    s3, users = scoped_keys
    mv = _model_version(tmp_path / "m")
    for _ in range(2):  # exported, then exported again over it
        assert export_version(mv, "s3://scoped/team", users["team"]) == "s3://scoped/team/m-v1"
        assert _keys(s3, "team/", "scoped") == [f"team/{key}" for key in EXPORTED]
    with pytest.raises(ExportError, match=r"^s3://gone does not exist: create the bucket first"):
        export_version(mv, "s3://gone/team", users["team"])


@pytest.mark.parametrize(("uri", "meant"), [("s3:/policies", "s3://policies"), ("oss:/b/x", "oss://b/x"),
                                            ("s3:handbook/x", "s3://handbook/x"), ("s3:", "s3://bucket/prefix")])
def test_an_object_uri_without_two_slashes_is_refused_not_read_as_a_local_folder(client, tmp_path, monkeypatch, uri,
                                                                                 meant):
    """`models export --to s3:/models/unirank` copied the model to a local folder `s3:/models/unirank` and exited 0,
    and `ingest s3:/policies` read one, as `s3://` (no bucket) did before it was refused."""
    from unirank.registry.export import export_version

    monkeypatch.chdir(tmp_path)
    (tmp_path / uri).mkdir(parents=True)
    (tmp_path / uri / "a.md").write_text("# A\n\nNot in a bucket.")
    said = (rf"{re.escape(repr(uri))} is not an object storage URI \({uri.split(':')[0]}:// takes two slashes\): "
            rf"did you mean {re.escape(meant)}\? For a local folder of that name, write \./{re.escape(uri)}\.$")
    with pytest.raises(SourceError, match=rf"^The source {said}"):
        client.ingest(uri, "s3docs")
    with pytest.raises(SourceError, match=rf"^The export destination \(--to\) {said}"):
        export_version(_model_version(tmp_path / "m"), uri)
    assert sorted(p.name for p in (tmp_path / uri).iterdir()) == ["a.md"] and not client.backend.exists("s3docs")
    assert client.ingest(f"./{uri}", "s3docs").ingested == [(tmp_path / uri / "a.md").as_uri()]


def test_a_prefix_whose_key_begins_with_a_slash_is_listed_as_it_is(tmp_path, client, bucket, s3_endpoint):
    """`ingest s3://handbook//lead` listed `lead/` (s3fs drops a key's leading "/"): it ingested lead/b.md, outside the
    root asked for, which --prune and `index remove` then never found, and not /lead/a.md. Scripts that join `prefix/`
    and `/name` make such keys. `models export --force` to s3://handbook//team deleted an export under team/."""
    from unirank.registry.export import export_version

    storage = client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    bucket.put_object(Bucket="handbook", Key="/lead/a.md", Body=b"# A\n\nLeading slash key armadillo.")
    bucket.put_object(Bucket="handbook", Key="lead/b.md", Body=b"# B\n\nNormal key badger.")
    assert client.ingest("s3://handbook//lead", "lead").ingested == ["s3://handbook//lead/a.md"]
    again = client.ingest("s3://handbook//lead/", "lead", prune=True)
    assert (again.files_seen, again.ingested, again.pruned) == (1, [], [])
    assert client.sources_under("lead", "s3://handbook//lead") == ["s3://handbook//lead/a.md"]
    mv = _model_version(tmp_path / "m")
    export_version(mv, "s3://handbook/team", storage)
    assert export_version(mv, "s3://handbook//team", storage, force=True) == "s3://handbook//team/m-v1"
    assert _keys(bucket, "team/") == [f"team/{key}" for key in EXPORTED]
    assert _keys(bucket, "/team/") == [f"/team/{key}" for key in EXPORTED]


def test_an_export_into_a_key_that_is_an_object_is_refused(tmp_path, bucket, s3_endpoint):
    """`models export --to s3://handbook/unirank/m-v1/model.safetensors` wrote under model.safetensors/, and the export
    that holds model.safetensors could no longer be downloaded (a file and a folder of one name); a local folder
    export refuses the same. An object named as the export itself was taken for its files."""
    from unirank.errors import ExportError
    from unirank.registry.export import export_version

    storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    mv = _model_version(tmp_path / "m")
    export_version(mv, "s3://handbook/unirank", storage)
    bucket.put_object(Bucket="handbook", Key="flat/m-v1", Body=b"an object named as the export")
    for to, key in (("unirank/m-v1/model.safetensors", "unirank/m-v1/model.safetensors"),
                    ("unirank/m-v1/config.json/sub", "unirank/m-v1/config.json"), ("flat", "flat/m-v1")):
        with pytest.raises(ExportError, match=rf"^s3://handbook/{re.escape(key)} is an object, not a folder: nothing "
                                              r"was exported\. Export elsewhere\.$"):
            export_version(mv, f"s3://handbook/{to}", storage, force=True)
    assert _keys(bucket, "unirank/") == [f"unirank/{key}" for key in EXPORTED]
    assert _keys(bucket, "flat") == ["flat/m-v1"]


def test_an_invalid_region_and_a_virtual_oss_bucket_on_a_local_server_name_their_settings(tmp_path, client, bucket,
                                                                                          s3_endpoint, monkeypatch):
    """An invalid region failed as "Provided region_name 'eu central' doesn't match a supported format" and "Check
    storage.endpoint_url" (export) or no setting (ingest); an oss:// bucket put in the host name of a local server
    ("Could not connect to the endpoint URL: http://docs.localhost:PORT/...") did not name
    storage.oss_addressing_style, the setting to change for one."""
    from unirank.errors import ExportError
    from unirank.registry.export import export_version

    mv = _model_version(tmp_path / "m")
    invalid = r"Provided region_name 'eu central' doesn't match a supported format\. "
    # model_copy: a region a settings check would refuse still reaches boto from AWS_DEFAULT_REGION
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS).model_copy(update={"region": "eu central"})
    named = rf"{invalid}Check storage\.region \(UNIRANK_STORAGE__REGION\): a region name such as eu-central-1\."
    with pytest.raises(SourceError, match=rf"^Cannot list s3://handbook/policies: {named}$"):
        client.ingest("s3://handbook/policies", "s3docs")
    with pytest.raises(ExportError, match=rf"^Cannot reach s3://handbook: {named} Nothing was exported"):
        export_version(mv, "s3://handbook/team", client.settings.storage)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu central")
    client.settings.storage = client.settings.storage.model_copy(update={"region": None})
    with pytest.raises(SourceError, match=rf"^Cannot list s3://handbook/policies: {invalid}storage\.region is unset, "
                                          r"so boto read it from AWS_REGION, AWS_DEFAULT_REGION or the AWS config"):
        client.ingest("s3://handbook/policies", "s3docs")

    url = f"http://localhost:{free_port()}"
    hint = (r"; for a local S3-compatible server, set storage\.oss_addressing_style = \"path\" "
            r"\(UNIRANK_STORAGE__OSS_ADDRESSING_STYLE=path\): \"virtual\" puts the bucket in the host name "
            r"\(docs\.localhost\)\.")
    client.settings.storage = StorageSettings(oss_endpoint_url=url, connect_timeout_s=1, attempts=1, **KEYS)
    with pytest.raises(SourceError, match=rf"^Cannot list oss://docs/hb: Could not connect .*docs\.localhost.* Check "
                                          rf"storage\.oss_endpoint_url \(UNIRANK_STORAGE__OSS_ENDPOINT_URL\){hint}$"):
        client.ingest("oss://docs/hb", "s3docs")
    with pytest.raises(ExportError, match=rf"^Cannot reach oss://docs: Could not connect .*{hint} Nothing was exported"):
        export_version(mv, "oss://docs/team", client.settings.storage)
    client.settings.storage = client.settings.storage.model_copy(update={"oss_addressing_style": "path"})
    with pytest.raises(SourceError, match=r"^Cannot list oss://docs/hb: Could not connect .* Check storage\."
                                          r"oss_endpoint_url \(UNIRANK_STORAGE__OSS_ENDPOINT_URL\)\.$"):
        client.ingest("oss://docs/hb", "s3docs")  # the bucket in the path: nothing more to say
    # A cloud's endpoint (OSS wants virtual addressing) that cannot be reached: no advice to leave it
    client.settings.storage = StorageSettings(oss_endpoint_url="http://oss-cn-nowhere.invalid", connect_timeout_s=1,
                                              attempts=1, **KEYS)
    with pytest.raises(SourceError, match=r"^Cannot list oss://docs/hb: Could not connect .*docs\.oss-cn-nowhere\."
                                          r"invalid.* Check storage\.oss_endpoint_url \(UNIRANK_STORAGE__OSS_ENDPOINT_URL\)\.$"):
        client.ingest("oss://docs/hb", "s3docs")
