"""Ingestion from S3-compatible object storage, against a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

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


def test_missing_bucket_is_reported(client, s3_endpoint):
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    with pytest.raises(SourceError, match="does not exist"):
        client.ingest("s3://no-such-bucket/x", "s3docs")
    with pytest.raises(SourceError, match="s3://no-such-bucket does not exist"):
        client.ingest("s3://no-such-bucket", "s3docs")
    assert not client.backend.exists("s3docs")


def test_an_unreachable_endpoint_is_not_reported_as_a_missing_bucket(client):
    client.settings.storage = StorageSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", **KEYS)
    with pytest.raises(SourceError, match=r"Cannot list s3://handbook: Could not connect"):
        client.ingest("s3://handbook", "s3docs")
    assert not client.backend.exists("s3docs")


def test_object_keys_keep_spaces_percent_signs_and_url_characters(client, bucket, s3_endpoint):
    """An object's URI carries its key as it is: '?' and '#' are not a query and a fragment, '%20' is not a space."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    keys = ("odd/Travel policy 2024.md", "odd/q?and#hash.md", "odd/literal%20percent.md", "odd/naïve résumé.txt")
    for n, key in enumerate(keys):
        bucket.put_object(Bucket="handbook", Key=key, Body=f"Document number {n} about llamas{n}.".encode())
    report = client.ingest("s3://handbook/odd", "odd")
    assert report.failed == [] and sorted(report.ingested) == sorted(f"s3://handbook/{k}" for k in keys)
    for n, key in enumerate(keys):
        hit = client.search(f"llamas{n}", "odd", mode="bm25", rerank=False, top_k=1).hits[0]
        assert hit.chunk.source_uri == f"s3://handbook/{key}" and hit.chunk.title == key[4:].rsplit(".", 1)[0]


def test_a_prefix_of_no_documents_is_said_and_creates_no_index(client, bucket, s3_endpoint):
    """It made an empty index and exited 0."""
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **KEYS)
    bucket.put_object(Bucket="handbook", Key="exports/sales.csv", Body=b"a,b\n")
    with pytest.raises(SourceError, match=r"No documents found in s3://handbook/exports \(only files of other "
                                          r"types: \.csv\)"):
        client.ingest("s3://handbook/exports", "s3docs")
    assert not client.backend.exists("s3docs")
