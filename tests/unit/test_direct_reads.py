"""The CLI's read-only commands without Prefect: the repository block read as plain data (checked as the
block checks it), the Prefect API found as Prefect finds it, `backup list`/`status` answered in-process,
and Prefect's run logs kept off the terminal unless -v."""
from __future__ import annotations

import json
import os
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from moto import mock_aws
from prefect_aws.client_parameters import AwsClientParameters
from typer.testing import CliRunner

from dmf.blocks import S3Repository
from dmf.cli import app
from dmf.core.errors import DmfError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.timestamps import parse_ts
from dmf.listing import list_backups
from dmf.prefect_api import ApiError, PrefectApi, api
from dmf.s3_settings import ClientParameters, direct_repository
from dmf.status import read_facts

runner = CliRunner()
SSE_C_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing-secret", "region_name": "us-east-1",
               "aws_client_parameters": {"endpoint_url": None}, "block_type_slug": "aws-credentials"}


def block_data(**fields) -> dict:
    """A dmf-s3-repository document's data as the API gives it (include_secrets=true)."""
    return {"bucket": "dmf-direct", "credentials": CREDENTIALS, **fields}


@pytest.mark.parametrize("params", [
    {}, {"endpoint_url": "http://s3.local:9000", "use_ssl": False}, {"verify": False},
    {"verify_cert_path": "CA"}, {"verify": False, "verify_cert_path": "CA"}, {"api_version": "2006-03-01"},
    {"config": {"signature_version": "unsigned", "connect_timeout": 5}},
])
def test_client_parameters_are_prefect_aws_s(params, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    params = {k: str(ca) if v == "CA" else v for k, v in params.items()}
    ours, theirs = ClientParameters(**params).get_params_override(), AwsClientParameters(**params).get_params_override()
    config = (ours.pop("config", None), theirs.pop("config", None))
    assert ours == theirs
    if config[1] is not None:
        assert config[0]._user_provided_options == config[1]._user_provided_options


@pytest.mark.parametrize("fields", [{}, {"sse": "SSE-C", "sse_customer_key": SSE_C_KEY, "part_size_mib": 64,
                                         "full_every": "12h,500 increments", "checksum_mode": "when_supported"}])
def test_the_plain_repository_is_the_block(fields):
    block, plain = S3Repository.model_validate(block_data(**fields)), direct_repository(block_data(**fields), "x")
    assert plain.model_dump(exclude={"credentials"}) == block.model_dump(exclude={"credentials", "block_type_slug"})
    assert plain.key_params() == block.key_params() and plain.write_headers() == block.write_headers()
    assert plain.credentials.get_boto3_session().get_credentials().secret_key == "testing-secret"


def test_one_client_per_process_for_equal_settings_and_never_across_keys_or_endpoints():
    def block(**credentials):
        return S3Repository.model_validate(block_data(credentials={**CREDENTIALS, **credentials}))
    assert block().client() is block().client() is block().client(None)
    assert direct_repository(block_data(), "x").client() is direct_repository(block_data(), "y").client()
    assert block().client() is not block(aws_secret_access_key="another-secret").client()
    assert block().client() is not block().client("http://127.0.0.1:9") is block().client("http://127.0.0.1:9")
    assert block().client() is not block().model_copy(update={"max_concurrency": 2}).client()


@pytest.mark.parametrize("fields,reason", [
    ({"sse": "SSE-C", "sse_customer_key": "c2hvcnQtc2VjcmV0LWtleQ=="}, "sse_customer_key must be 32 bytes"),
    ({"encryption": "client", "encryption_key": "c2hvcnQtc2VjcmV0LWtleQ=="}, "block:"),
    ({"part_size_mib": 2}, "part_size_mib: Input should be greater than or equal to 5"),
    ({"full_every": "sometimes"}, "full_every:"),
])
def test_an_invalid_block_is_refused_by_field_and_reason_never_its_values(fields, reason):
    with pytest.raises(ValueError):
        S3Repository.model_validate(block_data(**fields))
    with pytest.raises(DmfError) as refused:
        direct_repository(block_data(**fields), "default")
    message = str(refused.value)
    assert message.startswith("repository block 'default' is invalid: ") and reason in message
    assert "c2hvcnQtc2VjcmV0LWtleQ" not in message and "testing-secret" not in message


@pytest.fixture
def no_prefect_env(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("PREFECT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_the_api_is_found_as_prefect_finds_it(no_prefect_env, monkeypatch):
    assert api() is None  # no profiles file: Prefect's default profile, a temporary server
    (no_prefect_env / "home" / "profiles.toml").write_text(
        'active = "main"\n[profiles.main]\nPREFECT_API_URL = "http://main:4200/api"\n'
        '[profiles.other]\nPREFECT_API_URL = "http://other:4200/api"\nPREFECT_API_AUTH_STRING = "admin:pass"\n')
    assert api() == PrefectApi("http://main:4200/api", {})
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    assert api() == PrefectApi("http://other:4200/api", {"Authorization": "Basic YWRtaW46cGFzcw=="})
    monkeypatch.setenv("PREFECT_API_URL", "https://cloud/api")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_key")
    assert api() == PrefectApi("https://cloud/api", {"Authorization": "Bearer pnu_key"})


@pytest.mark.parametrize("where,what", [
    ("cwd/prefect.toml", "[api]\n"), ("cwd/.env", "PREFECT_API_URL=http://elsewhere/api\n"),
    ("cwd/pyproject.toml", "[tool.prefect]\napi.url = 'http://elsewhere/api'\n"),
    ("home/profiles.toml", 'active = "a"\n[profiles.a]\nPREFECT_API_URL = "http://x/api"\n'
                           'PREFECT_API_TLS_INSECURE_SKIP_VERIFY = true\n'),
    ("home/profiles.toml", 'active = "a"\n[profiles.a]\nPREFECT_API_URL = ""\n'),
])
def test_settings_read_elsewhere_leave_the_answer_to_the_flow(no_prefect_env, monkeypatch, where, what):
    monkeypatch.setenv("PREFECT_API_URL", "http://main:4200/api")
    assert api() is not None
    if where.startswith("home"):
        monkeypatch.delenv("PREFECT_API_URL")
    (no_prefect_env / where).write_text(what)
    assert api() is None


class FakeApi(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        FakeApi.seen.append((self.path, self.headers.get("Authorization")))
        status = 404 if "missing" in self.path else 500 if "broken" in self.path else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(json.dumps({"data": {"bucket": "b"}, "detail": "secret-detail"}).encode())

    def log_message(self, *args):
        pass


def test_a_block_is_read_over_http_and_failures_say_what_without_the_body():
    FakeApi.seen = []
    server = HTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prefect_api = PrefectApi(f"http://127.0.0.1:{server.server_port}/api", {"Authorization": "Bearer k"})
        assert prefect_api.block_data("dmf-s3-repository", "a b") == {"bucket": "b"}
        assert FakeApi.seen == [("/api/block_types/slug/dmf-s3-repository/block_documents/name/a%20b"
                                 "?include_secrets=true", "Bearer k")]
        with pytest.raises(ApiError, match="^no dmf-s3-repository block named 'missing' on http"):
            prefect_api.block_data("dmf-s3-repository", "missing")
        with pytest.raises(ApiError, match="answered 500") as failed:
            prefect_api.block_data("dmf-s3-repository", "broken")
        assert "secret-detail" not in str(failed.value)
    finally:
        server.shutdown()


class StubApi:
    """The Prefect API as the direct reads see it: a block document and canned filter answers."""

    def __init__(self, data: dict | None = None):
        self.data = data

    def block_data(self, slug: str, name: str) -> dict:
        if self.data is None:
            raise ApiError(f"no {slug} block named {name!r} on http://stub/api")
        return self.data

    def request(self, method: str, path: str, body: dict | None):
        if path == "flows/filter":
            return [{"id": "f1", "name": "backup-snapshot"}, {"id": "f2", "name": "backup-verify"}]
        if path == "deployments/filter":
            return [{"flow_id": "f1", "schedules": [{"active": True, "schedule": {"interval": 900.0}},
                                                    {"active": True, "schedule": {"cron": "0 * * * *"}}]},
                    {"flow_id": "f2", "schedules": [{"active": False, "schedule": {"interval": 60.0}}]}]
        if path == "flow_runs/filter":
            return [{"name": "newest", "state_type": "FAILED", "start_time": "2026-03-01T10:00:00Z",
                     "expected_start_time": "2026-03-01T10:00:00Z", "end_time": None,
                     "state": {"message": "host 10.0.0.2 unreachable"}},
                    {"name": "before", "state_type": "COMPLETED", "start_time": "2026-03-01T09:00:00Z",
                     "expected_start_time": "2026-03-01T09:00:00Z", "end_time": "2026-03-01T09:01:00Z",
                     "state": {"message": None}}] if body["flows"]["name"]["any_"] == ["backup-snapshot"] else []
        assert path == "artifacts/filter"
        return ([{"created": "2026-03-01T08:00:00+00:00", "description": "clean"}]
                if body["artifacts"]["key"]["any_"] == ["backup-verify"] else [])


def test_the_status_facts_are_read_from_the_api_s_json():
    facts = read_facts(StubApi().request)
    assert facts.intervals == {"backup-snapshot": timedelta(minutes=15)}
    (run,) = facts.runs
    assert (run.flow, run.state, run.at, run.completed_at, run.name, run.message) == (
        "backup-snapshot", "FAILED", parse_ts("20260301100000"), parse_ts("20260301090100"), "newest",
        "host 10.0.0.2 unreachable")
    assert [(c.key, c.at, c.summary) for c in facts.checks] == [("backup-verify", parse_ts("20260301080000"), "clean"),
                                                                ("restore-drill", None, "")]


@pytest.fixture
def direct(monkeypatch):
    """The CLI on a moto bucket with one full of one host; a flow run would fail the test."""
    import dmf.cli
    with mock_aws():
        stub = StubApi(block_data())
        monkeypatch.setattr(dmf.cli, "direct_api", lambda: stub)
        monkeypatch.setattr(dmf.cli, "run_guarded", lambda call: pytest.fail("ran the flow"))
        repository = direct_repository(stub.data, "default")
        s3 = repository.client()
        s3.create_bucket(Bucket="dmf-direct")
        ref = SetRef.snapshot(parse_ts("20260301000000"), "10.0.0.1")
        manifest = Manifest(set=ref, files=(FileEntry("ks/t-" + "0" * 32 + "/nb-1-big-Data.db", 1, "ab" * 32),),
                            host="10.0.0.1", host_id="h", created_at=ref.time, db_target="ks", hosts=("10.0.0.1",))
        s3.put_object(Bucket="dmf-direct", Key=ref.file_key("ks/t-" + "0" * 32 + "/nb-1-big-Data.db"), Body=b"x")
        s3.put_object(Bucket="dmf-direct", Key=ref.manifest_key, Body=manifest.to_json())
        yield stub, repository


def test_backup_list_answers_from_the_shared_listing_without_a_flow(direct):
    stub, repository = direct
    result = runner.invoke(app, ["backup", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == list_backups(repository)[0] and [r["snapshot_ts"] for r in rows] == ["20260301000000"]
    table = runner.invoke(app, ["backup", "list", "--kind", "full"])
    assert table.exit_code == 0 and table.stdout.strip().endswith("1 set(s); 0 incomplete")


def test_backup_status_answers_from_the_shared_report_without_a_flow(direct):
    result = runner.invoke(app, ["backup", "status", "--json"])
    report = json.loads(result.stdout)
    assert [t["db_target"] for t in report["targets"]] == ["ks"] and report["repository_bytes"] > 0
    snapshot = next(f for f in report["flows"] if f["flow"] == "backup-snapshot")
    assert snapshot["state"] == "FAILED" and snapshot["flags"] and report["problems"]
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("dmf: error: ") and "problem(s)" in result.stderr


def test_a_missing_block_is_one_line_and_status_1(direct):
    stub, _ = direct
    stub.data = None
    for command in (["backup", "list"], ["backup", "status"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr == "dmf: error: no dmf-s3-repository block named 'default' on http://stub/api\n"


def test_the_terminal_shows_a_run_s_warnings_only_unless_verbose(monkeypatch, capsys):
    """Without -v a run's INFO lines and the engine's failure lines stay off the terminal (the run in the
    UI has them); its warnings, which an operator must see, are printed."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from dmf import cli

    monkeypatch.setattr(PrefectConsoleHandler, "emit", PrefectConsoleHandler.emit)  # restored after the test
    for verbose, shown in ((True, ["info", "warning", "error", "service warning"]), (False, ["warning"])):
        monkeypatch.setattr(cli, "VERBOSE", verbose)
        handler = PrefectConsoleHandler(stream=sys.stderr)
        log = logging.getLogger(f"dmf.test.console.{verbose}")
        service = logging.getLogger(f"EventsWorker{verbose}")  # Prefect's services log under their class name
        for logger in (log, service):
            logger.addHandler(handler)
            logger.propagate = False
            logger.setLevel(logging.INFO)

        def run() -> None:
            for level in ("info", "warning", "error"):
                getattr(log, level)("line at %s", level)
            service.warning("line at service warning")
        cli.run_guarded(run)
        printed = capsys.readouterr().err
        assert [level for level in ("info", "warning", "error", "service warning")
                if f"line at {level}" in printed] == shown
