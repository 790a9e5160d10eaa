"""Any static server can be the hub: Debian's nginx serves a bundle directory on loopback in a
throw-away namespace, and the real client fetches, verifies and re-polls it (ETag, 304)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.sync import keys
from tests.conftest import REPO
from tests.sync.conftest import Publisher

pytestmark = pytest.mark.root

PORT = 8080

NGINX_CONF = """
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""

# The client side, run inside the namespace: poll, apply, poll again (304), see a new version,
# and refuse a tampered one.
CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from appliance.storage import atomic_write
    from appliance.sync import bundle as B, keys
    from appliance.sync.client import HubClient
    from tests.sync.conftest import build, sign

    url, directory, keyfile, state = sys.argv[1:5]
    key = keys.load_private(keyfile)
    out = []

    def publish(version, tamper=False):
        time.sleep(1.1)  # nginx's ETag is mtime (in seconds) and size
        data = build(version, ["192.0.2.%d" % version])
        atomic_write(Path(directory) / B.SIG_FILE, sign(data, key), 0o644)
        if tamper:
            data = data.replace(b"192.0.2.", b"192.0.3.")
        atomic_write(Path(directory) / B.BUNDLE_FILE, data, 0o644)

    async def main():
        client = HubClient(url, [key.public], state, name="edge-1")
        async def poll():
            sync = await client.poll_once()
            if sync.pending:
                sync = await client.applied(sync, "hash")
            out.append({"result": sync.result, "version": sync.version, "error": sync.error,
                        "long_poll": client.long_poll_max, "etag": sync.etag})
        publish(1)
        await poll()
        await poll()
        publish(2)
        await poll()
        publish(3, tamper=True)
        await poll()
        await poll()

    asyncio.run(main())
    print(json.dumps(out))
    """
)


@pytest.fixture
def nginx(netns: str, tmp_path: Path, publisher: Publisher) -> Iterator[tuple[str, Path]]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (setup.sh installs nginx-light)")
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=PORT, root=publisher.root))
    command = ["ip", "netns", "exec", netns, "nginx", "-c", str(conf), "-p", str(conf_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            probe = subprocess.run(
                ["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{PORT}"],
                capture_output=True,
                text=True,
            )
            if probe.stdout.strip():
                break
            if server.poll() is not None or time.monotonic() > deadline:
                err = server.stderr.read().decode() if server.stderr else ""
                pytest.fail(f"nginx did not start: {err} {(conf_dir / 'error.log').read_text()}")
            time.sleep(0.05)
        yield netns, conf_dir
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def test_nginx_serves_a_bundle_directory(
    nginx: tuple[str, Path], publisher: Publisher, tmp_path: Path
) -> None:
    netns, conf_dir = nginx
    keyfile = tmp_path / "hub.key"
    keys.write_keypair(keyfile, publisher.signers[0])
    url = f"http://127.0.0.1:{PORT}/{publisher.path}/"
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-c",
            CLIENT,
            url,
            str(publisher.directory),
            str(keyfile),
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    polls = json.loads(result.stdout)
    assert [(p["result"], p["version"]) for p in polls] == [
        ("applied", 1),
        ("not_modified", 1),
        ("applied", 2),
        ("bad_signature", 2),
        ("bad_signature", 2),
    ]
    assert polls[0]["long_poll"] == 0  # a static server offers no long poll: plain polling
    assert polls[0]["etag"]  # nginx's own ETags
    log = (conf_dir / "access.log").read_text()
    assert '"GET /site/edge-1/bundle.json.sig HTTP/1.1" 304' in log
    assert "POST /site/edge-1/status" in log  # refused by a static server, and ignored
    assert (tmp_path / "state" / "hub" / "current" / "bundle.json").exists()
    # The CLI checks the same URL as the daemon would (the tampered bundle is refused).
    verify = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "appliance",
            "bundle",
            "verify",
            url,
            "--trust",
            f"{keyfile}.pub",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert verify.returncode == 1
    assert verify.stderr.startswith("rejected: bad_signature")
