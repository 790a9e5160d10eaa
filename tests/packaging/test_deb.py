"""The Debian package, built once for the module by packaging/build-deb.sh: its control
fields, files, conffiles and maintainer scripts, the man page and the bash completion, and
the package unpacked into a throw-away root where the units are enabled the way its
postinst does it and `appliance` runs from it."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import __version__

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build-deb.sh"
DEPS = REPO / "packaging" / "build-deps.txt"
MAX_SIZE = 2 * 1024 * 1024  # bytes; about 200 KiB today
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def build_deps() -> list[str]:
    return [
        line.strip()
        for line in DEPS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _missing() -> list[str]:
    if shutil.which("dpkg-query") is None:
        return ["dpkg"]
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *build_deps()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    installed = {
        line.split()[0] for line in done.stdout.splitlines() if "install ok installed" in line
    }
    return sorted(set(build_deps()) - installed)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"build dependencies missing in CI: {missing} (setup.sh installs them)")
        pytest.skip(f"build dependencies missing: {missing}")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [str(BUILD), str(out)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])  # the interface: the last line
    assert path == out / f"appliance_{__version__}_all.deb"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package's files unpacked into an empty directory."""
    path = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(path)], check=True, timeout=60)
    yield path


def field(deb: Path, name: str) -> str:
    done = subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


def control_file(deb: Path, name: str, tmp_path: Path) -> str:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")], check=True, timeout=30)
    return (tmp_path / "DEBIAN" / name).read_text()


def test_control_fields(deb: Path) -> None:
    assert field(deb, "Package") == "appliance"
    assert field(deb, "Version") == __version__
    assert field(deb, "Architecture") == "all"
    depends = {d.strip().split()[0] for d in field(deb, "Depends").split(",")}
    assert {
        "python3-nftables",
        "python3-pyroute2",
        "python3-prometheus-client",
        "python3-cryptography",
        "nftables",
        "netbase",  # /etc/protocols: without it nft lists protocols by number
    } <= depends
    # the inspection prefilter's automaton; without it the prefilter is a regular expression
    assert field(deb, "Recommends") == "python3-ahocorasick"
    assert deb.stat().st_size < MAX_SIZE


def test_build_depends_are_the_listed_build_deps() -> None:
    control = (REPO / "debian" / "control").read_text()
    found = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", control, re.MULTILINE)
    assert found
    names = {dep.split()[0] for dep in found.group(1).replace("\n", " ").split(",") if dep.strip()}
    names.discard("debhelper-compat")
    assert names <= set(build_deps())
    assert "debhelper" in build_deps()


def test_files(root: Path) -> None:
    for path in (
        "usr/bin/appliance",
        "usr/lib/systemd/system/appliance.service",
        "usr/lib/systemd/system/appliance-restore.service",
        "usr/share/appliance/failsafe.nft",
        "usr/share/man/man8/appliance.8.gz",
        "usr/share/bash-completion/completions/appliance",
        "usr/lib/python3/dist-packages/appliance/cli.py",
        "etc/appliance/profile.toml",
        "etc/appliance/lists/management.txt",
        "etc/logrotate.d/appliance",
        "usr/share/doc/appliance/examples/netns.conf",
        "usr/share/doc/appliance/examples/low-port.conf",
        "usr/share/doc/appliance/examples/pip-install.conf",
    ):
        assert (root / path).is_file(), path
    assert (root / "var/lib/appliance").is_dir()
    assert (root / "var/lib/appliance").stat().st_mode & 0o777 == 0o700
    assert not (root / "lib").exists()  # the units are in /usr/lib/systemd/system
    assert (root / "usr/bin/appliance").read_text().startswith("#!/usr/bin/python3")
    shipped = (REPO / "systemd" / "appliance.service").read_text()
    assert (root / "usr/lib/systemd/system/appliance.service").read_text() == shipped
    assert "ExecStart=/usr/bin/appliance run" in shipped


def test_conffiles(deb: Path, tmp_path: Path) -> None:
    conffiles = set(control_file(deb, "conffiles", tmp_path).split())
    assert conffiles == {
        "/etc/appliance/profile.toml",
        "/etc/appliance/lists/management.txt",
        "/etc/appliance/lists/management-v6.txt",
        "/etc/logrotate.d/appliance",
    }


def test_units_enabled_but_not_started_on_install(deb: Path, tmp_path: Path) -> None:
    postinst = control_file(deb, "postinst", tmp_path)
    for unit in ("appliance.service", "appliance-restore.service"):
        assert f"deb-systemd-helper enable '{unit}'" in postinst
    assert "deb-systemd-invoke start" not in postinst
    assert "deb-systemd-invoke $_dh_action" not in postinst
    # an upgrade restarts a daemon that runs, and only then
    assert "deb-systemd-invoke try-restart appliance.service" in postinst
    # removal stops it (its table stays), before its modules go
    prerm = control_file(deb, "prerm", tmp_path)
    stop = prerm.index("deb-systemd-invoke stop appliance.service")
    assert stop < prerm.index("py3clean")


def test_purge_removes_the_state(deb: Path, tmp_path: Path) -> None:
    postrm = control_file(deb, "postrm", tmp_path)
    assert "deb-systemd-helper purge" in postrm
    assert "rm -rf /var/lib/appliance /var/log/appliance" in postrm


def test_enabled_in_a_root_as_the_postinst_does(root: Path) -> None:
    env = {
        "PATH": HOST_PATH,
        "DPKG_ROOT": str(root),
        "DPKG_MAINTSCRIPT_PACKAGE": "appliance",
        "DPKG_MAINTSCRIPT_NAME": "postinst",
    }
    done = subprocess.run(
        ["deb-systemd-helper", "enable", "appliance.service", "appliance-restore.service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    wants = root / "etc/systemd/system"
    link = wants / "multi-user.target.wants" / "appliance.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/appliance.service"
    link = wants / "sysinit.target.wants" / "appliance-restore.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/appliance-restore.service"


def run_from_root(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The packaged console script with the host's Python and only the root's modules."""
    return subprocess.run(
        ["/usr/bin/python3", str(root / "usr/bin/appliance"), *args],
        env={"PATH": HOST_PATH, "PYTHONPATH": str(root / "usr/lib/python3/dist-packages")},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_installed_command_runs(root: Path) -> None:
    done = run_from_root(root, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"appliance {__version__}"
    done = run_from_root(root, "check", str(root / "etc/appliance/profile.toml"))
    assert done.returncode == 0, done.stderr
    assert ": ok (default" in done.stdout
    where = subprocess.run(
        ["/usr/bin/python3", "-c", "import appliance; print(appliance.__file__)"],
        env={"PATH": HOST_PATH, "PYTHONPATH": str(root / "usr/lib/python3/dist-packages")},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(root))


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff")
def test_man_page_renders(root: Path, tmp_path: Path) -> None:
    page = tmp_path / "appliance.8"
    page.write_bytes(gzip.decompress((root / "usr/share/man/man8/appliance.8.gz").read_bytes()))
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P-cbou", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = done.stdout.replace("\u2010", "-")
    for heading in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS", "FILES"):
        assert heading in text
    for command in ("check", "run", "status", "bundle sign", "hub serve", "inspect"):
        assert f"\n   {command}\n" in text, command
    assert "--control-socket" in text
    assert "_rollback-watch" not in text


def complete(root: Path, *words: str) -> list[str]:
    """What the packaged completion offers for the last of ``words``, in plain bash."""
    script = root / "usr/share/bash-completion/completions/appliance"
    quoted = " ".join(f"'{w}'" for w in ("appliance", *words))
    done = subprocess.run(
        [
            "bash",
            "--norc",
            "--noprofile",
            "-c",
            f'source "{script}"; COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; '
            '_appliance; printf "%s\\n" "${COMPREPLY[@]}"; complete -p appliance',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    *offered, registered = done.stdout.splitlines()
    assert registered == "complete -F _appliance appliance"
    return offered


def test_bash_completion(root: Path) -> None:
    top = complete(root, "")
    assert {"check", "compile", "apply", "run", "status", "bundle", "hub"} <= set(top)
    assert "_rollback-watch" not in top
    assert complete(root, "st") == ["status"]
    assert complete(root, "bundle", "s") == ["sign"]
    assert complete(root, "--netns", "x", "set", "")[:3] == ["add", "del", "list"]
    assert "--resync-interval" in complete(root, "run", "--re")


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_shipped_failsafe_loads(root: Path, netns: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", str(root / "usr/share/appliance/failsafe.nft")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "appliance"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "failsafe-management" in listed


INSTALL_IN_OVERLAY = r"""
set -eu
root=$1 deb=$2
mount -t overlay overlay -o "lowerdir=/,upperdir=$root.upper,workdir=$root.work" "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
in_root dpkg -i "/tmp/$(basename "$deb")" >&2
echo "version: $(cd "$root" && in_root appliance --version)"
echo "check: $(in_root appliance check /etc/appliance/profile.toml)"
echo "status: $(in_root dpkg-query -W -f='${Status}' appliance)"
for unit in multi-user.target.wants/appliance.service \
        sysinit.target.wants/appliance-restore.service; do
    if [ -L "$root/etc/systemd/system/$unit" ]; then echo "enabled: $unit"; fi
done
in_root dpkg --purge appliance >&2
for path in /usr/bin/appliance /etc/appliance /var/lib/appliance; do
    if [ -e "$root$path" ]; then echo "left: $path"; fi
done
echo done
"""


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_dpkg_installs_and_purges_it_in_a_throwaway_root(deb: Path, tmp_path: Path) -> None:
    """The real dpkg, maintainer scripts included, in a copy-on-write overlay of this Debian
    machine's root (it has the dependencies), inside a private mount namespace: nothing of
    it outlives the command, and the machine's own root is not written."""
    root = tmp_path / "root"
    for path in (root, tmp_path / "root.upper", tmp_path / "root.work"):
        path.mkdir()
    done = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private"),
            *("sh", "-c", INSTALL_IN_OVERLAY, "sh", str(root), str(deb)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"version: appliance {__version__}" in lines
    assert "check: /etc/appliance/profile.toml: ok (default" in done.stdout
    assert "status: install ok installed" in lines
    assert "enabled: multi-user.target.wants/appliance.service" in lines
    assert "enabled: sysinit.target.wants/appliance-restore.service" in lines
    assert not [line for line in lines if line.startswith("left: ")], lines
    assert lines[-1] == "done"
