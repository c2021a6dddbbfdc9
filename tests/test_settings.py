"""The settings object as the Python API loads it: mistakes in unirank.toml or UNIRANK_* are errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from env_helpers import clear_unirank_settings, without_unirank_settings
import unirank
from unirank.settings import Settings


@pytest.fixture()
def config(tmp_path, monkeypatch):
    clear_unirank_settings(monkeypatch)
    path = tmp_path / "unirank.toml"
    path.write_text("")
    monkeypatch.setenv("UNIRANK_CONFIG", str(path))
    return path


def test_a_misspelt_key_is_a_configuration_error_naming_the_real_one(config):
    config.write_text('[embedder]\nmodle = "team-embed@prod"\n')
    with pytest.raises(unirank.ConfigurationError,
                       match=r"unknown setting embedder\.modle \(did you mean embedder\.model\?\)"):
        unirank.Unirank()
    config.write_text('[search]\ntop_k = "ten"\n')
    with pytest.raises(unirank.ConfigurationError, match=r"search\.top_k: Input should be a valid integer.*'ten'"):
        Settings.load()
    config.write_text("[search\n")
    with pytest.raises(unirank.ConfigurationError, match="is not valid TOML"):
        Settings.load()


def test_a_misspelt_variable_is_a_configuration_error(config, monkeypatch):
    monkeypatch.setenv("UNIRANK_SEARCH__RRF_KK", "30")  # a key inside a section: pydantic refuses it
    with pytest.raises(unirank.ConfigurationError, match=r"unknown setting search\.rrf_kk"):
        Settings.load()
    monkeypatch.delenv("UNIRANK_SEARCH__RRF_KK")
    monkeypatch.setenv("UNIRANK_SERACH__RRF_K", "30")  # a section: pydantic-settings alone would ignore it
    with pytest.raises(unirank.ConfigurationError, match=r"UNIRANK_SERACH__RRF_K: there is no \[serach\] section "
                                                         r"\(did you mean UNIRANK_SEARCH__RRF_K\?\)"):
        unirank.Unirank()
    monkeypatch.delenv("UNIRANK_SERACH__RRF_K")
    monkeypatch.setenv("UNIRANK_TEST_TOKEN", "t")  # no "__": a tool's own variable, not a setting
    assert Settings.load().search.rrf_k == 60


def test_errors_say_where_the_settings_came_from(config, monkeypatch):
    """The header named UNIRANK_SEARCH__TOP_K as an example even when no variable was set: it read as
    if one were."""
    config.write_text("[search]\ntop_k = 0\n")
    with pytest.raises(unirank.ConfigurationError, match=rf"^Invalid settings \(read from {re.escape(str(config))}\):"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_RERANKER__TOP_K", "99")
    with pytest.raises(unirank.ConfigurationError,
                       match=rf"^Invalid settings \(read from {re.escape(str(config))}, UNIRANK_RERANKER__TOP_K\):"):
        Settings.load()


def test_a_config_file_that_does_not_exist_is_an_error_not_the_defaults(config, monkeypatch):
    monkeypatch.setenv("UNIRANK_CONFIG", str(config.with_name("unirnak.toml")))
    with pytest.raises(unirank.ConfigurationError, match=r"UNIRANK_CONFIG names .*unirnak\.toml, which does not exist"):
        Settings.load()


def test_good_settings_load_from_the_file_and_the_environment(config, monkeypatch):
    config.write_text("[search]\ntop_k = 7\nrrf_k = 30\n")
    monkeypatch.setenv("UNIRANK_SEARCH__TOP_K", "12")
    monkeypatch.setenv("UNIRANK_SERVING__API_KEYS", '["k1", "k2"]')
    settings = Settings.load()
    assert (settings.search.top_k, settings.search.rrf_k, settings.serving.api_keys) == (12, 30, ["k1", "k2"])


def test_chunk_overlap_is_checked_against_a_size_only_when_one_is_set(config):
    assert (Settings.load().chunking.size, Settings.load().chunking.overlap) == (None, 64)  # the model's window
    config.write_text("[chunking]\nsize = 100\noverlap = 100\n")
    with pytest.raises(unirank.ConfigurationError, match=r"chunking\.overlap \(100\) must be smaller than "
                                                          r"chunking\.size \(100\)"):
        Settings.load()


def test_the_embedder_model_is_unset_by_default_and_never_empty(config, monkeypatch):
    """Unset, each index is read with the model that made it; an empty value is neither that nor a model."""
    settings = Settings.load()
    assert (settings.embedder.model, settings.embedder.ref) == (None, "base")
    monkeypatch.setenv("UNIRANK_EMBEDDER__MODEL", " ")
    with pytest.raises(unirank.ConfigurationError, match=r"embedder\.model is empty: name a model, or remove") as err:
        Settings.load()
    assert "Value error" not in str(err.value)  # pydantic's prefix, noise before a message that names its key
    monkeypatch.setenv("UNIRANK_EMBEDDER__MODEL", "team-embed@prod")
    assert Settings.load().embedder.ref == "team-embed@prod"


def test_relative_paths_in_the_file_are_read_from_its_folder_and_in_the_environment_from_the_cwd(
        config, monkeypatch, tmp_path):
    """A config named by UNIRANK_CONFIG must mean the same data wherever a command runs."""
    config.write_text('data_dir = "data"\n[chat]\ndb_path = "chats/chat.sqlite"\n[serving]\napi_keys_file = "~/keys"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = Settings.load()
    assert settings.data_dir == config.parent / "data"
    assert settings.chat_db_path == config.parent / "chats" / "chat.sqlite"
    assert settings.serving.api_keys_file == Path.home() / "keys"
    monkeypatch.setenv("UNIRANK_DATA_DIR", "from-env")
    assert Settings.load().data_dir == Path("from-env")


def test_an_error_names_only_the_sources_that_set_what_is_wrong(config, monkeypatch):
    """With UNIRANK_DATA_DIR set as well, a misspelt section's header read `read from UNIRANK_DATA_DIR,
    UNIRANK_SERACH__RRF_K`, as if the data dir were part of the problem."""
    monkeypatch.setenv("UNIRANK_DATA_DIR", "/tmp/data")
    monkeypatch.setenv("UNIRANK_SERACH__RRF_K", "5")
    with pytest.raises(unirank.ConfigurationError) as err:
        Settings.load()
    assert str(err.value).startswith("Invalid settings (read from UNIRANK_SERACH__RRF_K):\n"), err.value
    assert "did you mean UNIRANK_SEARCH__RRF_K?" in str(err.value)
    monkeypatch.delenv("UNIRANK_SERACH__RRF_K")
    monkeypatch.setenv("UNIRANK_SEARCH__RRF_K", "0")  # a bad value: its variable, not the file or the data dir
    config.write_text("[search]\ntop_k = 7\n")
    with pytest.raises(unirank.ConfigurationError, match=r"^Invalid settings \(read from UNIRANK_SEARCH__RRF_K\):"):
        Settings.load()
    monkeypatch.delenv("UNIRANK_SEARCH__RRF_K")
    config.write_text("[chunking]\nsize = 20\n")  # a check across a section: whoever set its keys
    monkeypatch.setenv("UNIRANK_CHUNKING__OVERLAP", "30")
    with pytest.raises(unirank.ConfigurationError,
                       match=rf"^Invalid settings \(read from {re.escape(str(config))}, UNIRANK_CHUNKING__OVERLAP\):"):
        Settings.load()


def test_a_validator_message_does_not_repeat_the_value(config, monkeypatch):
    """It read `reranker.top_k is 51, but at most 50 candidates can be reranked (got 51)`."""
    for where in ("file", "variable"):
        if where == "file":
            config.write_text("[reranker]\ntop_k = 51\n")
        else:
            config.write_text("")
            monkeypatch.setenv("UNIRANK_RERANKER__TOP_K", "51")
        with pytest.raises(unirank.ConfigurationError) as err:
            Settings.load()
        assert str(err.value).endswith("reranker.top_k is 51, but at most 50 candidates can be reranked"), err.value


@pytest.mark.parametrize("key, value", [("ef_search", "4294967296"), ("ef_search", "99999999999999999999"),
                                        ("build_threads", "99999999999999999999")])
def test_the_hnsw_breadth_and_threads_are_bounded(config, monkeypatch, key, value):
    """Unbounded, a large search.ef_search crashed searches ("Out of memory!") and, at 2**64, every command
    that opened an index (usearch takes a 32-bit breadth); build_threads went to usearch the same way."""
    monkeypatch.setenv(f"UNIRANK_SEARCH__{key.upper()}", value)
    with pytest.raises(unirank.ConfigurationError, match=rf"search\.{key}: Input should be less than or equal to"):
        Settings.load()


@pytest.mark.parametrize("toml, key", [('[serving]\napi_keys = "sk-SECRET123"\n', "serving.api_keys"),
                                       ('[serving]\napi_keys = ["sk-SECRET123", 12345678]\n', "serving.api_keys.1"),
                                       ("[storage]\nsecret_access_key = 12345678\n", "storage.secret_access_key")])
def test_an_invalid_secret_is_not_printed_in_the_error(config, toml, key):
    """The error read `serving.api_keys: Input should be a valid list (got 'sk-SECRET123')`, printing the
    secret that `config show` hides, to a message people paste into issues."""
    config.write_text(toml)
    with pytest.raises(unirank.ConfigurationError) as err:
        Settings.load()
    assert f"{key}: Input should be a valid" in str(err.value) and "(the value is hidden)" in str(err.value)
    assert "SECRET123" not in str(err.value) and "12345678" not in str(err.value)


def test_a_bad_edit_of_the_keys_file_is_logged_as_sentences(tmp_path, caplog):
    """The log line read `…to serve without keys.; keeping the tokens read before…`."""
    import logging
    import time

    from unirank.serving.auth import TokenStore

    keys = tmp_path / "keys.txt"
    keys.write_text("old-token\n")
    store = TokenStore([], keys)
    keys.write_text("# rotating\n")
    os.utime(keys, (time.time() + 5, time.time() + 5))
    with caplog.at_level(logging.ERROR, logger="unirank.serving.auth"):
        store.check("Bearer old-token")  # the last good set stays
    assert caplog.messages == ["api_keys_file holds no tokens, so every request would be refused: add one "
                               "`TOKEN [EXPIRES]` a line, or unset serving.api_keys_file to serve without keys. "
                               "Keeping the tokens read before until the file is fixed."]


def test_a_model_written_as_a_relative_path_in_the_file_is_read_from_its_folder(config, monkeypatch, tmp_path):
    """`embedder.model = "./models/edge"` in a config named by UNIRANK_CONFIG was looked for under the cwd.
    Names, registry refs and hub ids (ORG/NAME) stay as written."""
    config.write_text('[embedder]\nmodel = "./models/edge"\n[reranker]\nmodel = "../rerankers/r1"\n[serving]\n'
                      'models = ["./models/edge", "cisi@2", "base", "sentence-transformers/all-MiniLM-L6-v2"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = Settings.load()
    assert Path(settings.embedder.model) == config.parent / "models" / "edge"
    assert Path(settings.reranker.model).resolve() == (config.parent.parent / "rerankers" / "r1").resolve()
    assert settings.serving.models[0] == str(config.parent / "models" / "edge")
    assert settings.serving.models[1:] == ["cisi@2", "base", "sentence-transformers/all-MiniLM-L6-v2"]
    config.write_text('[embedder]\nmodel = "cisi"\n[reranker]\nmodel = "org/cross-encoder"\n')
    settings = Settings.load()
    assert (settings.embedder.model, settings.reranker.model) == ("cisi", "org/cross-encoder")
    monkeypatch.setenv("UNIRANK_EMBEDDER__MODEL", "./from-env")  # a variable's: from the cwd, as a shell user expects
    assert Settings.load().embedder.model == "./from-env"


def test_a_config_that_is_a_folder_is_an_error_not_the_defaults(config, monkeypatch):
    monkeypatch.setenv("UNIRANK_CONFIG", str(config.parent))
    with pytest.raises(unirank.ConfigurationError, match=r"UNIRANK_CONFIG names .*, which is a folder, not a settings "
                                                         r"file"):
        Settings.load()


def test_a_whole_section_variable_is_named_when_it_is_wrong(config, monkeypatch):
    """The header read `no … and no UNIRANK_* variables` for UNIRANK_SEARCH='{"rrfk": 7}'."""
    monkeypatch.setenv("UNIRANK_SEARCH", '{"rrfk": 7}')
    with pytest.raises(unirank.ConfigurationError, match=r"^Invalid settings \(read from UNIRANK_SEARCH\):\n"
                                                         r".*did you mean search\.rrf_k\?"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_SEARCH", '{"rrf_k": 7}')
    assert Settings.load().search.rrf_k == 7


def test_an_unreadable_variable_is_named_alone(config, monkeypatch):
    """With UNIRANK_SERVING__PORT=9000 set too, both were said to be unreadable."""
    monkeypatch.setenv("UNIRANK_SERVING__PORT", "9000")
    monkeypatch.setenv("UNIRANK_SERVING__HOST", "localhost")  # not JSON, but a string setting is not parsed as JSON
    monkeypatch.setenv("UNIRANK_SERVING__API_KEYS", "k1")
    with pytest.raises(unirank.ConfigurationError,
                       match=r"^Invalid settings: UNIRANK_SERVING__API_KEYS could not be read \("):
        Settings.load()


def test_the_device_and_the_reranker_model_are_checked_when_loaded(config, monkeypatch):
    for good in ("cpu", "cuda", "cuda:1", "mps", "xpu:0"):
        monkeypatch.setenv("UNIRANK_EMBEDDER__DEVICE", good)
        assert Settings.load().embedder.device == good
    for bad in ("gpu", "cuda 1", "cuda:x", "CPU", ""):
        monkeypatch.setenv("UNIRANK_EMBEDDER__DEVICE", bad)
        with pytest.raises(unirank.ConfigurationError,
                           match=rf"embedder\.device {re.escape(repr(bad))} is not a device torch knows"):
            Settings.load()
    monkeypatch.delenv("UNIRANK_EMBEDDER__DEVICE")
    config.write_text('[reranker]\nmodel = ""\n')
    with pytest.raises(unirank.ConfigurationError, match=r"reranker\.model is empty: name a model"):
        Settings.load()


def test_the_data_dir_variable_is_never_empty_and_expands_the_home_folder(config, monkeypatch):
    """`UNIRANK_DATA_DIR=` meant the current directory, and `UNIRANK_DATA_DIR=~/foo` a folder named `~`."""
    monkeypatch.setenv("UNIRANK_DATA_DIR", "")
    with pytest.raises(unirank.ConfigurationError,
                       match=r"^Invalid settings \(read from UNIRANK_DATA_DIR\):\n  - data_dir is empty"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_DATA_DIR", "~/foo")
    assert Settings.load().data_dir == Path.home() / "foo"
    monkeypatch.delenv("UNIRANK_DATA_DIR")
    config.write_text('data_dir = ""\n')
    with pytest.raises(unirank.ConfigurationError, match=r"data_dir is empty"):
        Settings.load()


@pytest.mark.parametrize(("variable", "meant"), [("UNIRANK_SEARCH_RRF_K", "UNIRANK_SEARCH__RRF_K"),
                                                 ("unirank_search_rrfk", "UNIRANK_SEARCH__RRF_K"),
                                                 ("UNIRANK_DATADIR", "UNIRANK_DATA_DIR"),
                                                 ("UNIRANK_SERCH", "UNIRANK_SEARCH")])
def test_a_near_miss_variable_is_refused(config, monkeypatch, variable, meant):
    """A single underscore between section and key, or a misspelt top-level name, was silently ignored."""
    monkeypatch.setenv(variable, "7")
    with pytest.raises(unirank.ConfigurationError, match=rf"^Invalid settings \(read from {variable}\):\n"
                                                         rf"  - unknown setting {variable}.*did you mean {meant}\?"):
        Settings.load()


def test_the_projects_own_variables_are_not_near_misses(config, monkeypatch):
    for name in ("UNIRANK_ES_URL", "UNIRANK_QUICKSTART_PORT", "UNIRANK_TEST_TOKEN", "UNIRANK_TEST_LLM_KEY",
                 "UNIRANK_TEST_DOC2QUERY_KEY", "UNIRANK_CHAT_API_KEY", "UNIRANK_SERVING_TOKEN"):
        monkeypatch.setenv(name, "x")  # a token variable a user named for chat.llm_api_key_env, say
    assert Settings.load().search.rrf_k == 60


def test_config_show_prints_toml_that_loads_back(config, monkeypatch, tmp_path):
    """Rich wrapped the output at 80 columns when piped, so a long data_dir broke the TOML; masked secrets
    (`api_keys = ["***"]`) loaded back as a real key."""
    import subprocess
    import sys

    long_dir = tmp_path / ("a-rather-long-folder-name-" * 4) / "data"
    env = without_unirank_settings(os.environ)
    env.pop("COLUMNS", None)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_CONFIG=str(config), UNIRANK_DATA_DIR=str(long_dir),
               UNIRANK_SERVING__API_KEYS='["k-live-abc", "k-2"]', UNIRANK_STORAGE__SECRET_ACCESS_KEY="s3-secret")
    shown = subprocess.run([sys.executable, "-m", "unirank.cli.main", "config", "show"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=True).stdout
    assert "k-live-abc" not in shown and "s3-secret" not in shown
    assert "# api_keys" in shown and "2 keys" in shown and "# secret_access_key" in shown
    config.write_text(shown)
    settings = Settings.load()
    assert settings.data_dir == long_dir
    assert settings.serving.api_keys == [] and settings.storage.secret_access_key is None


def test_a_settings_file_that_cannot_be_read_is_a_configuration_error(config, monkeypatch):
    """Another user's unirank.toml (mode 600), or one that fails with an I/O error, ended every command in
    a raw PermissionError or OSError traceback (exit 1), not a settings error (exit 2)."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    config.write_text("[search]\nrrf_k = 1\n")
    opened = Path.open

    def denied(self, *args, **kwargs):  # as for a user who may not read it (the tests run as root)
        if self == config:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    said = rf"^Invalid settings: {re.escape(str(config))} cannot be read \(Permission denied\): make it readable"
    with pytest.raises(unirank.ConfigurationError, match=said + r".* or fix UNIRANK_CONFIG to name a settings file"):
        Settings.load()
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 2 and "cannot be read (Permission denied)" in " ".join(shown.output.split())
    if Path("/proc/self/mem").is_file():  # Linux: a file whose reading fails with EIO
        monkeypatch.setenv("UNIRANK_CONFIG", "/proc/self/mem")
        with pytest.raises(unirank.ConfigurationError, match=r"/proc/self/mem cannot be read \(Input/output error\)"):
            Settings.load()


def test_the_user_and_password_in_a_url_setting_are_hidden_in_config_show_and_errors(config, monkeypatch):
    """`config show` (and --json) printed https://user:password@HOST whole, and so did a settings error
    naming the URL, though either is pasted into issues as the keys it hides are."""
    import json

    from typer.testing import CliRunner

    from unirank.cli.main import app

    monkeypatch.setenv("UNIRANK_CHAT__LLM_BASE_URL", "https://user:s3cret-pw@llm.example/v1")
    monkeypatch.setenv("UNIRANK_STORAGE__ENDPOINT_URL", "http://minio:m1n1o-pw@localhost:9000")
    monkeypatch.setenv("UNIRANK_STORAGE__OSS_ENDPOINT_URL", "https://oss-cn-hangzhou.aliyuncs.com")
    as_json = json.loads(CliRunner().invoke(app, ["config", "show", "--json"]).stdout)
    assert as_json["chat"]["llm_base_url"] == "https://***@llm.example/v1"
    assert as_json["storage"]["endpoint_url"] == "http://***@localhost:9000"
    assert as_json["storage"]["oss_endpoint_url"] == "https://oss-cn-hangzhou.aliyuncs.com"  # none to hide
    shown = CliRunner().invoke(app, ["config", "show"]).stdout
    assert '# llm_base_url = "https://***@llm.example/v1" (its user and password hidden)' in shown
    assert 'oss_endpoint_url = "https://oss-cn-hangzhou.aliyuncs.com"' in shown
    assert "s3cret" not in shown and "m1n1o" not in shown
    monkeypatch.delenv("UNIRANK_CHAT__LLM_BASE_URL")
    monkeypatch.delenv("UNIRANK_STORAGE__ENDPOINT_URL")
    config.write_text(shown)  # loads back with no "***" user planted: the hidden URL is a comment
    assert Settings.load().chat.llm_base_url is None

    config.write_text("")
    for wrong, says in (("minio:m1n1o-pw@localhost:9000", "needs a scheme: https://***@localhost:9000"),
                        ("ftp://minio:m1n1o-pw@host", "'ftp://***@host' must start with http:// or https://")):
        monkeypatch.setenv("UNIRANK_STORAGE__ENDPOINT_URL", wrong)
        with pytest.raises(unirank.ConfigurationError, match=re.escape(says)) as refused:
            Settings.load()
        assert "m1n1o" not in str(refused.value)
    monkeypatch.delenv("UNIRANK_STORAGE__ENDPOINT_URL")
    monkeypatch.setenv("UNIRANK_CHAT", '{"llm_base_url": ["https://user:s3cret-pw@llm.example/v1"]}')
    with pytest.raises(unirank.ConfigurationError, match=r"chat\.llm_base_url: .*\(got \['https://\*\*\*@llm") as refused:
        Settings.load()
    assert "s3cret" not in str(refused.value)


def test_the_variable_holding_the_llm_key_is_not_a_near_miss(config, monkeypatch):
    """chat.llm_api_key_env may name a UNIRANK_* variable that reads like chat.llm_api_key_env mistyped."""
    monkeypatch.setenv("UNIRANK_CHAT_LLM_API_KEY", "sk-1")
    with pytest.raises(unirank.ConfigurationError, match=r"did you mean UNIRANK_CHAT__LLM_API_KEY_ENV\?"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_CHAT__LLM_API_KEY_ENV", "UNIRANK_CHAT_LLM_API_KEY")
    assert Settings.load().chat.llm_api_key_env == "UNIRANK_CHAT_LLM_API_KEY"


def test_the_isolated_environments_drop_settings_in_any_case(config, monkeypatch, tmp_path):
    """pydantic-settings reads `unirank_search__rrf_k` as UNIRANK_SEARCH__RRF_K, but the benches' and the serving
    tests' "defaults" kept it (they dropped only upper-case names)."""
    import importlib.util

    from serving_helpers import isolated_env

    monkeypatch.setenv("unirank_search__rrf_k", "30")
    assert "unirank_search__rrf_k" not in isolated_env(tmp_path)
    assert "unirank_search__rrf_k" not in without_unirank_settings(os.environ)
    for name, default in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(name, os.environ.get(name, default))  # restored after: _common sets them on import
    spec = importlib.util.spec_from_file_location(
        "bench_common", Path(__file__).resolve().parents[1] / "bench" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.isolated_settings(tmp_path / "data").search.rrf_k == 60
    assert "unirank_search__rrf_k" not in os.environ


def test_settings_given_in_code_are_checked_as_the_files_and_variables_are(config, monkeypatch, tmp_path):
    """The Python API's docs said to build Settings(...) in code, which skipped load()'s checks (a missing
    UNIRANK_CONFIG gave the defaults) and raised pydantic's ValidationError: load(**overrides) does both."""
    monkeypatch.setenv("UNIRANK_SEARCH__RRF_K", "30")
    settings = Settings.load(data_dir=tmp_path / "data", search={"mode": "bm25"})
    assert (settings.data_dir, settings.search.mode, settings.search.rrf_k) == (tmp_path / "data", "bm25", 30)
    with pytest.raises(unirank.ConfigurationError, match=r"^Invalid settings \(read from the arguments to "
                                                         r"Settings\.load\):\n  - search\.top_k: .*'ten'"):
        Settings.load(search={"top_k": "ten"})
    with pytest.raises(unirank.ConfigurationError, match=r"unknown setting datadir \(did you mean data_dir\?\)"):
        Settings.load(datadir=tmp_path)
    monkeypatch.setenv("UNIRANK_CONFIG", str(config.with_name("unirnak.toml")))
    with pytest.raises(unirank.ConfigurationError, match=r"UNIRANK_CONFIG names .*unirnak\.toml, which does not exist"):
        Settings.load(data_dir=tmp_path)
    assert "Settings.load(" in unirank.Unirank.__doc__


def test_both_hybrid_weights_zero_is_refused(config):
    """Every hybrid search came back empty, without a word."""
    config.write_text("[search]\nbm25_weight = 0\nknn_weight = 0\n")
    with pytest.raises(unirank.ConfigurationError, match=r"search\.bm25_weight and search\.knn_weight are both 0.*"
                                                         r"search\.mode = \"bm25\" or \"knn\""):
        Settings.load()
    config.write_text("[search]\nbm25_weight = 0\n")
    assert Settings.load().search.knn_weight == 1.0


def test_the_storage_timeouts_and_attempts_are_settings(config, monkeypatch):
    """How long object storage may take to connect and to answer, and how many tries a request gets, were
    module constants in the sources: a slow endpoint (or one worth failing fast on) could not be told."""
    storage = Settings.load().storage
    assert (storage.connect_timeout_s, storage.read_timeout_s, storage.attempts) == (10.0, 30.0, 3)
    config.write_text("[storage]\nconnect_timeout_s = 2.5\nread_timeout_s = 120\n")
    monkeypatch.setenv("UNIRANK_STORAGE__ATTEMPTS", "1")
    storage = Settings.load().storage
    assert (storage.connect_timeout_s, storage.read_timeout_s, storage.attempts) == (2.5, 120.0, 1)
    monkeypatch.delenv("UNIRANK_STORAGE__ATTEMPTS")
    for key, value, said in (("connect_timeout_s", "0", "greater than 0"), ("read_timeout_s", "-1", "greater than 0"),
                             ("attempts", "0", "greater than or equal to 1")):
        config.write_text(f"[storage]\n{key} = {value}\n")
        with pytest.raises(unirank.ConfigurationError, match=rf"storage\.{key}: Input should be {said}"):
            Settings.load()


def test_timeouts_are_finite_and_storage_ones_bounded(config, monkeypatch):
    """UNIRANK_STORAGE__CONNECT_TIMEOUT_S=inf failed every request ("cannot convert float infinity to integer"),
    READ_TIMEOUT_S=inf or 1e12 waited for ever on an endpoint that never answers, and `config show` printed inf."""
    for key, value, said in (("CONNECT_TIMEOUT_S", "inf", "a finite number"),
                             ("READ_TIMEOUT_S", "inf", "a finite number"), ("READ_TIMEOUT_S", "nan", "a finite number"),
                             ("READ_TIMEOUT_S", "1e12", "less than or equal to 3600"),
                             ("CONNECT_TIMEOUT_S", "3601", "less than or equal to 3600"),
                             ("ATTEMPTS", "21", "less than or equal to 20")):
        monkeypatch.setenv(f"UNIRANK_STORAGE__{key}", value)
        with pytest.raises(unirank.ConfigurationError, match=rf"storage\.{key.lower()}: Input should be {said}"):
            Settings.load()
        monkeypatch.delenv(f"UNIRANK_STORAGE__{key}")
    monkeypatch.setenv("UNIRANK_STORAGE__READ_TIMEOUT_S", "3600")
    monkeypatch.setenv("UNIRANK_STORAGE__ATTEMPTS", "20")
    assert (Settings.load().storage.read_timeout_s, Settings.load().storage.attempts) == (3600.0, 20)
    for section, key in (("remote", "timeout_s"), ("remote", "rerank_timeout_s"), ("remote", "backoff_s"),
                         ("remote", "verify_interval_s"), ("chat", "llm_timeout_s"), ("serving", "registry_poll_s"),
                         ("serving", "max_wait_ms"), ("serving", "max_request_mb"), ("serving", "graceful_shutdown_s"),
                         ("api", "max_request_mb")):
        config.write_text(f"[{section}]\n{key} = inf\n")
        with pytest.raises(unirank.ConfigurationError, match=rf"{section}\.{key}: Input should be a finite number"):
            Settings.load()


def test_a_storage_endpoint_is_a_url_with_a_scheme_and_a_host(config, monkeypatch):
    """Aliyun's console lists OSS endpoints without a scheme: "oss-cn-hangzhou.aliyuncs.com" loaded, and boto
    refused it only when a source was read ("Invalid endpoint"), naming no setting."""
    config.write_text('[storage]\noss_endpoint_url = "oss-cn-hangzhou.aliyuncs.com"\n')
    with pytest.raises(unirank.ConfigurationError,
                       match=rf"^Invalid settings \(read from {re.escape(str(config))}\):\n  - storage\."
                             r"oss_endpoint_url 'oss-cn-hangzhou\.aliyuncs\.com' needs a scheme: "
                             r"https://oss-cn-hangzhou\.aliyuncs\.com$"):
        Settings.load()
    config.write_text("")
    for value, said in (("localhost:9000", r"'localhost:9000' needs a scheme: http://localhost:9000"),
                        ("ftp://minio.internal", r"'ftp://minio\.internal' must start with http:// or https://"),
                        ("https://", r"'https://' names no host: https://HOST"),
                        ("http://minio:port", r"'http://minio:port' is not a URL"),
                        ("", r"is empty: give the endpoint's URL")):
        monkeypatch.setenv("UNIRANK_STORAGE__ENDPOINT_URL", value)
        with pytest.raises(unirank.ConfigurationError, match=r"\(read from UNIRANK_STORAGE__ENDPOINT_URL\):\n"
                                                             rf"  - storage\.endpoint_url {said}"):
            Settings.load()
    monkeypatch.setenv("UNIRANK_STORAGE__ENDPOINT_URL", "http://localhost:9000")
    monkeypatch.setenv("UNIRANK_STORAGE__OSS_ENDPOINT_URL", "https://oss-cn-hangzhou.aliyuncs.com")
    storage = Settings.load().storage
    assert (storage.endpoint_url, storage.oss_endpoint_url) == ("http://localhost:9000",
                                                                "https://oss-cn-hangzhou.aliyuncs.com")
    monkeypatch.delenv("UNIRANK_STORAGE__ENDPOINT_URL")
    assert Settings.load().storage.endpoint_url is None  # unset: AWS S3


def test_a_storage_region_is_a_region_name(config, monkeypatch):
    """"eu central" loaded, and boto refused it only when the storage was first reached: as the endpoint's
    failure on export, with no setting named on ingest."""
    for value in ("eu central", "-eu", "eu-", "123", "x" * 64):
        monkeypatch.setenv("UNIRANK_STORAGE__REGION", value)
        with pytest.raises(unirank.ConfigurationError, match=r"\(read from UNIRANK_STORAGE__REGION\):\n  - storage\."
                                                             rf"region {re.escape(repr(value))} is not a region name: "
                                                             r"give one such as eu-central-1"):
            Settings.load()
    for value in ("eu-central-1", "cn-hangzhou", "us-gov-west-1"):
        monkeypatch.setenv("UNIRANK_STORAGE__REGION", value)
        assert Settings.load().storage.region == value
    for blank in ("", "  "):  # unset, boto's default, as before: `REGION=${AWS_REGION}` with it unset
        monkeypatch.setenv("UNIRANK_STORAGE__REGION", blank)
        assert Settings.load().storage.region is None
    monkeypatch.delenv("UNIRANK_STORAGE__REGION")
    assert Settings.load().storage.region is None


@pytest.mark.parametrize("encoding", ["hex", "rot13", "base64", "undefined"])
def test_a_legacy_encoding_that_reads_no_text_is_a_configuration_error(config, monkeypatch, encoding):
    """Python's bytes-to-bytes codecs passed, then stopped the ingest at the first file not in UTF-8."""
    monkeypatch.setenv("UNIRANK_INGEST__LEGACY_ENCODING", encoding)
    with pytest.raises(unirank.ConfigurationError, match=rf"ingest\.legacy_encoding '{encoding}' is not a text "
                                                         r"encoding .*use one such as cp1252, cp1250 or latin-1"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_INGEST__LEGACY_ENCODING", "cp1250")
    assert Settings.load().ingest.legacy_encoding == "cp1250"


def test_weights_and_score_thresholds_are_finite(config, monkeypatch):
    """UNIRANK_SEARCH__KNN_WEIGHT=inf made every hybrid score Infinity (no ranking; `--json` printed `Infinity`),
    and nan was refused as "greater than or equal to 0 (got nan)"."""
    for key, value in (("KNN_WEIGHT", "inf"), ("BM25_WEIGHT", "inf"), ("KNN_WEIGHT", "nan")):
        monkeypatch.setenv(f"UNIRANK_SEARCH__{key}", value)
        with pytest.raises(unirank.ConfigurationError, match=rf"search\.{key.lower()}: Input should be a finite number"):
            Settings.load()
        monkeypatch.delenv(f"UNIRANK_SEARCH__{key}")
    for section, key, value in (("search", "knn_weight", "inf"), ("reranker", "blend_weight", "nan"),
                                ("chat", "min_score", "-inf"), ("chat", "min_score_cosine", "nan"),
                                ("chat", "min_score_cross_encoder", "nan")):
        config.write_text(f"[{section}]\n{key} = {value}\n")
        with pytest.raises(unirank.ConfigurationError, match=rf"{section}\.{key}: Input should be a finite number"):
            Settings.load()


def test_every_path_variable_expands_the_home_folder(config, monkeypatch):
    """The README says `~` is the home folder in the file and in variables: only UNIRANK_DATA_DIR expanded it,
    so UNIRANK_CHAT__DB_PATH=~/chat.sqlite made a folder named `~` under the current one."""
    monkeypatch.setenv("UNIRANK_CHAT__DB_PATH", "~/chats/chat.sqlite")
    monkeypatch.setenv("UNIRANK_SERVING__API_KEYS_FILE", "~/keys")
    settings = Settings.load()
    assert settings.chat.db_path == settings.chat_db_path == Path.home() / "chats" / "chat.sqlite"
    assert settings.serving.api_keys_file == Path.home() / "keys"


def test_a_data_dir_that_is_a_file_is_refused(config, monkeypatch, tmp_path):
    """A data_dir naming a file ended `ingest` and `search` in a NotADirectoryError traceback, and made `index
    list` say "No indexes yet."."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(a_file))
    with pytest.raises(unirank.ConfigurationError, match=rf"data_dir {re.escape(str(a_file))} is a file: name a folder"):
        Settings.load()
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "not-yet"))  # a folder made when first needed is fine
    assert Settings.load().data_dir == tmp_path / "not-yet"


def test_an_empty_chat_index_is_refused(config, monkeypatch):
    """UNIRANK_CHAT__INDEX= was taken, and the error a question then got said to set chat.index."""
    monkeypatch.setenv("UNIRANK_CHAT__INDEX", " ")
    with pytest.raises(unirank.ConfigurationError, match=r"chat\.index is empty: name an index"):
        Settings.load()


@pytest.mark.parametrize(("toml", "says"), [
    ('[reranker]\nenabled = true\nmodel = "none"\n',
     r'reranker.enabled is true but reranker.model is "none".*set reranker.model .*or set reranker.enabled = false'),
    ("[reranker]\nenabled = true\ntop_k = 5\n",
     r"reranker.enabled is true but search.top_k \(10\) is above reranker.top_k \(5\).*set search.top_k to at "
     r"most 5, raise reranker.top_k \(at most 50\), or set reranker.enabled = false"),
])
def test_settings_under_which_every_default_search_fails_are_refused(config, monkeypatch, toml, says):
    """Both loaded without a word, and then every search that took the defaults failed."""
    config.write_text(toml)
    with pytest.raises(unirank.ConfigurationError, match=says):
        Settings.load()
    config.write_text("")
    monkeypatch.setenv("UNIRANK_RERANKER__ENABLED", "true")
    monkeypatch.setenv("UNIRANK_SEARCH__TOP_K", "51")  # above the default reranker.top_k, 50
    with pytest.raises(unirank.ConfigurationError, match=r"search.top_k \(51\) is above reranker.top_k \(50\)") as caught:
        Settings.load()
    # The check spans sections, so the error has no location: its sources are the settings it names.
    assert str(caught.value).startswith("Invalid settings (read from UNIRANK_RERANKER__ENABLED, UNIRANK_SEARCH__TOP_K)")
    with pytest.raises(unirank.ConfigurationError, match=r"^Invalid settings \(read from UNIRANK_RERANKER__ENABLED, "
                                                         r"the arguments to Settings.load\)"):
        Settings.load(reranker={"model": "none"})
    monkeypatch.setenv("UNIRANK_SEARCH__TOP_K", "50")
    assert Settings.load().reranker.enabled
    monkeypatch.setenv("UNIRANK_RERANKER__ENABLED", "false")
    monkeypatch.setenv("UNIRANK_SEARCH__TOP_K", "51")
    assert Settings.load(reranker={"model": "none"}).search.top_k == 51  # no reranking by default: nothing fails


@pytest.mark.parametrize(("key", "toml", "says"), [
    ("SEARCH__TOP_K", "true", r"search.top_k: Input should be a number, not true or false \(got True\)"),
    ("RERANKER__BLEND_WEIGHT", "false", r"reranker.blend_weight: Input should be a number, not true or false"),
    ("CHUNKING__SIZE", "true", r"chunking.size: Input should be a number, not true or false"),
    ("RERANKER__ENABLED", "1", r"reranker.enabled: Input should be true or false \(got 1\)"),
    ("RERANKER__ENABLED", '"on"', r"reranker.enabled: Input should be true or false \(got 'on'\)"),
    ("EMBEDDER__PADDING_FREE", '"yes"', r"embedder.padding_free: Input should be true or false"),
])
def test_a_bool_is_no_number_and_a_number_or_word_no_bool_in_the_file_as_in_variables(config, monkeypatch, key,
                                                                                         toml, says):
    """unirank.toml's `top_k = true` was read as 1 (the variable was refused), and `enabled = 1` or "on"
    as true."""
    section, name = key.lower().split("__")
    config.write_text(f"[{section}]\n{name} = {toml}\n")
    with pytest.raises(unirank.ConfigurationError, match=says):
        Settings.load()
    if toml == "1":  # the number 1 in the file; a variable's text "1" is true, as a shell writes it
        return
    config.write_text("")
    monkeypatch.setenv(f"UNIRANK_{key}", toml.strip('"'))
    with pytest.raises(unirank.ConfigurationError, match=f"{section}.{name}: Input should be"):
        Settings.load()


def test_true_and_false_are_read_alike_from_the_file_and_variables(config, monkeypatch):
    config.write_text('[reranker]\nenabled = true\n[embedder]\npadding_free = "False"\n')
    loaded = Settings.load()
    assert loaded.reranker.enabled is True and loaded.embedder.padding_free is False
    config.write_text("")
    for value, meant in (("true", True), ("0", False), ("TRUE", True), ("1", True)):
        monkeypatch.setenv("UNIRANK_RERANKER__ENABLED", value)
        assert Settings.load().reranker.enabled is meant


def test_a_data_dir_under_a_file_is_refused_and_one_that_cannot_be_made_is_said_to_be_data_dir(
        config, monkeypatch, tmp_path):
    """Both ended an ingest in a bare NotADirectoryError or FileNotFoundError, and `index list` said there
    were no indexes."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(a_file / "data" / "more"))
    with pytest.raises(unirank.ConfigurationError,
                       match=rf"data_dir .*more cannot be made: {re.escape(str(a_file))} is a file, not a folder"):
        Settings.load()
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made")
    monkeypatch.setenv("UNIRANK_DATA_DIR", "/proc/unirank-nope")
    with unirank.Unirank() as client:
        with pytest.raises(unirank.ConfigurationError,
                           match=r"data_dir /proc/unirank-nope cannot be used: making /proc/unirank-nope/indexes "
                                 r"failed \(No such file or directory\)\. Set data_dir"):
            client.ingest(str(Path(__file__).parents[1] / "examples" / "sample-docs"), "docs")


def test_verbose_request_logs_hide_a_user_and_password_in_a_url():
    """`unirank -v` logs the HTTP client's requests with their URLs whole: a chat.llm_base_url holding a user
    and password printed them on every question, though config show and the errors hide them."""
    code = ("import logging, httpx\n"
            "from unirank.cli.main import _main\n"
            "_main(verbose=True)\n"
            "logging.getLogger('httpx').info('HTTP Request: %s %s \"%s\"', 'POST', "
            "httpx.URL('http://bob:hunter2@127.0.0.1:9/v1/chat/completions'), 'HTTP/1.1 200 OK')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "POST http://***@127.0.0.1:9/v1/chat/completions" in done.stderr and "hunter2" not in done.stderr
