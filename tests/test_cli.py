"""The command line as users meet it: exit statuses, one-line errors, --netns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_appliance, run_as_nobody

GOOD = REPO / "tests" / "compile" / "golden" / "full.toml"


def bad_profile(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text('version = 1\nname = "bad"\n[zones.lan]\nnetworks = ["10.0.0.300/24"]\n')
    return path


def test_check_valid_exits_0() -> None:
    result = run_appliance("check", str(GOOD))
    assert result.returncode == 0
    assert "ok" in result.stdout


@pytest.mark.parametrize("command", ["check", "compile", "plan", "apply"])
def test_invalid_profile_exits_2_with_one_line(command: str, tmp_path: Path) -> None:
    result = run_appliance(command, str(bad_profile(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "zones.lan.networks[0]" in result.stderr
    assert str(tmp_path / "bad.toml") in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_profile_is_one_line(tmp_path: Path) -> None:
    result = run_appliance("check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1


def test_compile_json_is_libnftables_json() -> None:
    import json

    result = run_appliance("compile", "--json", str(GOOD))
    document = json.loads(result.stdout)
    first = document["nftables"][0]
    assert first == {"add": {"table": {"family": "inet", "name": "appliance"}}}


def test_unknown_netns_is_one_line_error() -> None:
    result = run_appliance("plan", "--netns", "no-such-namespace-here", str(GOOD))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "no-such-namespace-here" in result.stderr


@pytest.mark.root
@pytest.mark.parametrize(
    "argv",
    [
        ["--netns", "ns1", "--state-dir", "/s", "apply", "p.toml"],
        ["apply", "--netns", "ns1", "--state-dir", "/s", "p.toml"],
        ["--netns", "ns1", "apply", "--state-dir", "/s", "p.toml"],
    ],
)
def test_common_options_count_before_and_after_the_command(argv: list[str]) -> None:
    from appliance.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.netns, args.state_dir, args.profile) == ("ns1", "/s", "p.toml")
    plain = build_parser().parse_args(["apply", "p.toml"])
    assert plain.netns is None and plain.state_dir == "/var/lib/appliance"


def test_the_run_options_default_as_the_daemon_does() -> None:
    from appliance.cli import build_parser
    from appliance.daemon.context import DaemonConfig

    args = build_parser().parse_args(["run"])
    config = DaemonConfig(profile="p.toml", state_dir="/s", control_socket="/s/c")
    assert args.inspect_queue == config.inspect_queue
    assert args.resync_interval == config.resync_interval


def test_plan_exit_statuses(netns: str) -> None:
    pending = run_appliance("plan", "--netns", netns, str(GOOD))
    assert pending.returncode == 3
    assert pending.stdout.startswith("+ table inet appliance")
    assert run_appliance("apply", "--netns", netns, str(GOOD)).returncode == 0
    assert run_appliance("plan", "--netns", netns, str(GOOD)).returncode == 0


@pytest.mark.parametrize("columns", ["40", "132", "", "wide"])
def test_help_is_as_wide_as_with_argparse_s_own_formatter(
    columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from appliance.cli import build_parser

    monkeypatch.setenv("COLUMNS", columns)
    parser = build_parser()
    ours = parser.format_help()
    parser.formatter_class = argparse.HelpFormatter
    assert ours == parser.format_help()


# What `appliance apply` would leave to the interpreter's last collection, which it skips
# (see appliance.cli.main): objects in reference cycles that hold a file, a socket or a
# finalizer. None may: their bytes would be lost unflushed, their ends never run.
LEFT_OPEN = """
import gc, io, socket, sys
from appliance import cli
code = cli.run_command(sys.argv[1:])
gc.set_debug(gc.DEBUG_SAVEALL)
gc.collect()
held = {type(o).__qualname__ for o in gc.garbage
        if isinstance(o, (io.IOBase, socket.socket)) or hasattr(type(o), "__del__")}
print(code, sorted(held))
"""


@pytest.mark.root
def test_an_apply_leaves_no_cycle_holding_a_file_or_socket_at_exit(
    netns: str, tmp_path: Path
) -> None:
    """The first load and a delta of an elements file (the record read and written)."""
    listing = tmp_path / "hosts.txt"
    profile = tmp_path / "p.toml"
    profile.write_text(
        'version = 1\nname = "left-open"\n[zones.lan]\ninterfaces = ["eth1"]\n'
        f'[sets.blocklist]\ntype = "ipv4_addr"\nelements_file = "{listing}"\n'
    )
    argv = ["apply", "--netns", netns, "--state-dir", str(tmp_path / "state"), str(profile)]
    for hosts in (range(1, 200), range(50, 250)):
        listing.write_text("".join(f"10.0.{h // 256}.{h % 256}\n" for h in hosts))
        done = subprocess.run(
            [sys.executable, "-c", LEFT_OPEN, *argv], capture_output=True, text=True, cwd=REPO
        )
        applied, left = done.stdout.splitlines()
        assert applied.startswith("applied left-open") and left == "0 []", done.stderr


@pytest.mark.root
def test_every_kernel_command_acts_in_the_named_namespace(netns: str) -> None:
    assert run_appliance("apply", "--netns", netns, str(GOOD)).returncode == 0
    assert run_appliance("set", "add", "--netns", netns, "blocklist", "192.0.2.7").returncode == 0
    listed = run_appliance("set", "list", "--netns", netns, "blocklist")
    assert "192.0.2.7" in listed.stdout
    # The host's own namespace was not touched.
    import subprocess

    host = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "inet appliance" not in host


def test_status_text_shows_the_hub() -> None:
    from appliance.cli import _status_lines

    base = {"policy": "edge", "source": "hub", "sets": {}}
    hub = {
        "url": "http://hub/site/edge-1/",
        "version": 5,
        "enforced": True,
        "stale": True,
        "expires": "2030-01-01T00:00:00Z",
        "result": "unreachable",
        "error": "connection refused",
    }
    lines = _status_lines({**base, "hub": hub})
    assert (
        "hub:           http://hub/site/edge-1/: bundle version 5, "
        "expires 2030-01-01T00:00:00Z (stale: expired, still enforced)"
    ) in lines
    assert "hub sync:      unreachable: connection refused" in lines
    assert not any(line.startswith("hub") for line in _status_lines({**base, "hub": None}))


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return run_as_nobody("-m", "appliance", *args)


@pytest.mark.root
def test_set_by_another_user_says_permission_denied() -> None:
    """Not root: the daemon's socket refuses the connection, and without a daemon the
    kernel would; either way the error says so (not "no such set")."""
    directory = Path(tempfile.mkdtemp(prefix="appliance-cli-"))
    try:
        directory.chmod(0o755)
        path = str(directory / "control.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            os.chmod(path, 0o600)
            server.listen(1)
            denied = _as_nobody("set", "add", "blocklist", "192.0.2.1", "--control-socket", path)
        assert denied.returncode == 1, denied.stderr
        assert denied.stderr.strip() == (
            f"appliance: control socket {path}: permission denied (the daemon answers root only)"
        )
        nobody = str(directory / "none.sock")
        direct = _as_nobody("set", "add", "blocklist", "192.0.2.1", "--control-socket", nobody)
        assert direct.returncode == 1, direct.stderr
        assert direct.stderr.strip() == (
            "appliance: set: permission denied (the kernel's sets need root)"
        )
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("listen", ["9469", "[::1]9469", "127.0.0.1:http", "[fe80::1:9469"])
def test_a_bad_metrics_listen_address_is_refused_before_the_daemon_starts(
    listen: str, tmp_path: Path
) -> None:
    result = run_appliance(
        "run", "--metrics-listen", listen, "--state-dir", str(tmp_path), "--profile", "/nonexistent"
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("appliance: --metrics-listen: bad listen address")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "p.toml"],
        ["apply"],
        ["apply", "-h"],
        ["--netns", "ns1", "apply", "p.toml", "--confirm", "5s"],
        ["--state-dir=/s", "apply", "--bogus", "p.toml"],
        ["plan", "a.toml", "b.toml"],
        ["set", "add", "blocklist", "10.0.0.1", "--timeout", "1h"],
        ["run", "--resync-interval", "x"],
        ["status", "--json"],
        ["apply", "--netns"],
    ],
)
def test_a_command_parsed_by_its_parser_alone_as_by_the_whole(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`appliance apply` builds only its own parser (the start of a one-shot command):
    what it parses, its help and its errors are the whole parser's."""
    from appliance.cli import build_parser, named_command

    def outcome(only: str | None) -> tuple[object, str, str]:
        try:
            parsed: object = vars(build_parser(only).parse_args(argv))
        except SystemExit as exc:
            parsed = exc.code
        captured = capsys.readouterr()
        return parsed, captured.out, captured.err

    only = named_command(argv)
    assert only is not None
    assert outcome(only) == outcome(None)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["--version"], ["--net", "x", "apply"], ["bundle", "build"], ["aply", "p"]],
)
def test_without_one_of_its_own_commands_every_parser_is_built(argv: list[str]) -> None:
    from appliance.cli import named_command

    assert named_command(argv) is None
