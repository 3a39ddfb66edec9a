"""RestoreRequest: every rule of `dmf restore snapshot`'s input, held alike by the CLI and the flow."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dmf.cli import app
from dmf.core.errors import InputError
from dmf.core.restore_request import RestoreRequest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_ts

runner = CliRunner()
NTS = "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"


def parse(**options):
    return RestoreRequest.parse("127.0.0.1,127.0.0.2", "/abs/restore", "ks.t", **options)


# (flow parameters beyond HOSTS PATH ks.t, the CLI's extra words, the one-line message)
REFUSED = [
    (dict(db_target=""), [], "DB_TARGET is required: keyspace or keyspace.table"),
    (dict(hosts="127.0.0.1,,127.0.0.2"), [], "invalid HOSTS '127.0.0.1,,127.0.0.2': empty item (two commas in a "
     "row, or one at an end)"),
    (dict(time="2025-01-01"), ["--time", "2025-01-01"], None),
    (dict(mode="copy"), ["--mode", "copy"], "invalid --mode 'copy': node, sstableloader or import"),
    (dict(replay_commitlogs=True, replay_on="elsewhere"), ["--replay-commitlogs", "--replay-on", "elsewhere"],
     "invalid --replay-on 'elsewhere': scratch or nodes"),
    (dict(into="ks.copy", replay_commitlogs=True, replay_on="nodes"),
     ["--into", "ks.copy", "--replay-commitlogs", "--replay-on", "nodes"], None),
    (dict(max_download_mib_s=0.0), ["--max-download-mib-s", "0"], "--max-download-mib-s must be a positive number "
     "of MiB/s, not 0"),
    (dict(dc_map="dc1"), ["--dc-map", "dc1", "--schema"], None),
    (dict(replication="{'class': 'Simple'}"), ["--replication", "{'class': 'Simple'}", "--schema"], None),
    (dict(dc_map="dc1:dc2"), ["--dc-map", "dc1:dc2"],
     "--dc-map and --replication rewrite the keyspace --schema creates: add --schema"),
    (dict(dc_map="dc1:dc2", replication=NTS, restore_schema=True),
     ["--dc-map", "dc1:dc2", "--replication", NTS, "--schema"],
     "--dc-map and --replication both rewrite the replication: give one"),
    (dict(truncate_first=True), ["--truncate-first"], "--truncate-first empties ks.t (every row written since the "
     "backup is lost; Cassandra's auto_snapshot keeps a copy on each node): add --yes to confirm"),
    (dict(into="ks.t"), ["--into", "ks.t"], "--into ks.t is DB_TARGET itself: leave --into out to restore in place"),
    (dict(into="ks.copy", restore_schema=True), ["--into", "ks.copy", "--schema"],
     "--into creates the copy from the backup's schema itself: leave --schema out"),
    (dict(path="restore"), [], "PATH 'restore' is relative: a queued or deployed run would resolve it in the "
     "Prefect worker's temporary directory; give an absolute path"),
]


def _cli_words(flow_params: dict, extra: list[str]) -> list[str]:
    return ["restore", "snapshot", flow_params.get("hosts", "127.0.0.1"), flow_params.get("path", "/abs/restore"),
            flow_params.get("db_target", "ks.t"), *extra, *(["-a"] if "path" in flow_params else [])]


@pytest.mark.parametrize("params, words, message", REFUSED, ids=[m or str(p) for p, _, m in REFUSED])
def test_the_cli_and_the_flow_refuse_the_same_input_with_the_same_line(params, words, message, monkeypatch):
    import dmf.cli
    from dmf.flows.restore_snapshot import restore_snapshot

    # Nothing may start: the flow is never reached from the CLI, the flow body stops at its first line.
    monkeypatch.setattr(dmf.cli, "run_guarded", lambda call: pytest.fail("the CLI started the flow"))
    monkeypatch.setattr(dmf.cli, "queue_and_exit", lambda *a: pytest.fail("the CLI queued the flow"))
    result = runner.invoke(app, _cli_words(params, words))
    flow_params = {"hosts": "127.0.0.1", "path": "/abs/restore", "db_target": "ks.t", **params}
    with pytest.raises(InputError) as refused:
        restore_snapshot.fn(**flow_params)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"dmf: error: {refused.value}"]
    if message is not None:
        assert str(refused.value) == message


def test_truncate_first_needs_yes_on_both_paths():
    with pytest.raises(InputError, match="add --yes to confirm"):
        parse(truncate_first=True)
    assert parse(truncate_first=True, yes=True).truncate_first
    assert not parse(yes=True).truncate_first  # --yes alone confirms nothing


def test_dc_map_and_replication_together_are_refused_on_both_paths():
    with pytest.raises(InputError, match="both rewrite the replication: give one"):
        parse(restore_schema=True, dc_map="dc1:dc2", replication=NTS)
    assert parse(restore_schema=True, dc_map="dc1:dc2").dc_map == {"dc1": "dc2"}
    assert parse(restore_schema=True, replication=NTS).replication == {"class": "NetworkTopologyStrategy", "dc1": "3"}


@pytest.mark.parametrize("option", [dict(dc_map="dc1:dc2"), dict(replication=NTS)])
def test_a_replication_rewrite_needs_schema(option):
    with pytest.raises(InputError, match="add --schema"):
        parse(**option)


def test_the_target_must_name_a_keyspace():
    with pytest.raises(InputError, match="DB_TARGET is required"):
        RestoreRequest.parse("127.0.0.1", "/abs", "")


def test_mode_is_one_of_three_and_the_node_path_by_default():
    assert parse(mode="import").mode == "import" and parse(mode="sstableloader").mode == "sstableloader"
    assert parse().mode == "node" and RestoreRequest.parse(**parse().flow_params()).mode == "node"
    with pytest.raises(InputError, match="invalid --mode 'nodes': node, sstableloader or import"):
        parse(mode="nodes")


def test_into_replays_in_a_scratch_cassandra_only():
    assert parse(into="ks.copy", replay_commitlogs=True).into == DbTarget("ks", "copy")  # scratch: the default
    with pytest.raises(InputError, match="leave --replay-on nodes out"):
        parse(into="ks.copy", replay_commitlogs=True, replay_on="nodes")
    assert parse(replay_commitlogs=True, replay_on="nodes").replays_on_nodes
    assert not parse(replay_on="nodes").replays_on_nodes  # nothing replayed: where does not matter


def test_the_flow_defaults_each_parameter_as_the_request_does():
    """A deployment run from the UI gets the flow's defaults, the CLI the request's: the same restore."""
    import inspect

    from dmf.flows.restore_snapshot import restore_snapshot

    flow_defaults = {name: p.default for name, p in inspect.signature(restore_snapshot.fn).parameters.items()}
    request_defaults = {name: p.default for name, p in inspect.signature(RestoreRequest.parse).parameters.items()
                        if p.default is not inspect.Parameter.empty and name != "cwd"}
    assert {name: flow_defaults[name] for name in request_defaults} == request_defaults
    assert flow_defaults["mode"] == "node"


def test_time_is_parsed_once_and_now_is_left_to_the_run():
    assert parse(time="20250101120000").at == parse_ts("20250101120000")
    assert parse().at is None and parse(time="").at is None
    with pytest.raises(InputError, match="--time"):
        parse(time="20251301000000")


def test_the_download_limit_is_a_positive_number():
    assert parse(max_download_mib_s=12.5).max_download_mib_s == 12.5
    with pytest.raises(InputError, match="--max-download-mib-s must be a positive number of MiB/s, not -1"):
        parse(max_download_mib_s=-1)


def test_into_copies_one_table_without_schema_or_replay():
    assert parse(into="ks.copy").into == DbTarget("ks", "copy")
    for options, why in [(dict(into="ks.copy", replay_commitlogs=True, replay_on="nodes"), "leave --replay-on nodes"),
                         (dict(into="ks"), "must both be keyspace.table")]:
        with pytest.raises(InputError, match=why):
            parse(**options)


def test_a_relative_path_is_taken_from_the_operators_directory_or_refused():
    assert RestoreRequest.parse("127.0.0.1", "restore", "ks", cwd="/home/op").path == "/home/op/restore"
    with pytest.raises(InputError, match="is relative"):
        RestoreRequest.parse("127.0.0.1", "restore", "ks")


def test_the_flow_parameters_parse_back_into_the_same_request():
    request = parse(time="20250101120000", mode="node", restore_schema=True, get_commitlogs=True,
                    replay_commitlogs=True, replay_on="nodes",
                    keep_files=True, allow_host_subset=True, replication=NTS, truncate_first=True, yes=True,
                    max_download_mib_s=7.0)
    assert RestoreRequest.parse(**request.flow_params()) == request
    scratch = parse(replay_commitlogs=True, scratch_heap_mib=2048)
    assert RestoreRequest.parse(**scratch.flow_params()) == scratch
    copy = parse(dc_map="dc1:dc2,dc3:dc4", restore_schema=True)
    assert RestoreRequest.parse(**copy.flow_params()) == copy
    assert RestoreRequest.parse(**parse(into="ks.copy").flow_params()).into == DbTarget("ks", "copy")


def test_the_scratch_heap_is_a_bounded_number_of_mib_for_a_scratch_replay_only():
    assert parse(replay_commitlogs=True).scratch_heap == 512
    assert parse(replay_commitlogs=True, scratch_heap_mib=4096).scratch_heap == 4096
    for heap in (255, 65537, 0, -1, 1.5, True):
        with pytest.raises(InputError, match=f"--scratch-heap-mib must be a whole number of MiB from 256 to 65536, "
                                             f"not {heap!r}$"):
            parse(replay_commitlogs=True, scratch_heap_mib=heap)
    for options in (dict(), dict(get_commitlogs=True), dict(replay_commitlogs=True, replay_on="nodes")):
        with pytest.raises(InputError, match="sizes the scratch Cassandra of --replay-commitlogs"):
            parse(scratch_heap_mib=1024, **options)
