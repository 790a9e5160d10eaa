"""pytest plugin: tests that need the QEMU test guest's kernel.

Two markers:

``guest``
    The test runs inside the guest: it needs kernel features this host lacks
    (flowtable, nft ``queue``, VLAN, VRF, dummy links) or the arm64 kernel.
``qemu``
    The test runs on the host and boots the guest itself, for instance to send
    traffic from host network namespaces through the guest's NICs.

Where they run:

* Inside the guest (``APPLIANCE_GUEST=1``, set by ``qemu/run.sh``): ``guest`` tests
  run as usual; ``qemu`` tests are deselected (a guest does not boot a guest).
* On the host with ``--guest=ARCH``: all selected ``guest`` tests run in one boot
  of the ARCH guest and are reported here, each under its own node id, with the
  outcome it had in the guest; ``qemu`` tests run on the host against ARCH.
* On the host without ``--guest``: they are deselected and the summary names
  them. In CI (``CI=true``) they fail instead: a test that needs the guest must
  have run somewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCHES = ("amd64", "arm64")
RUN_SH = REPO / "qemu" / "run.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def in_guest() -> bool:
    """Whether this process runs in the QEMU test guest."""
    if os.environ.get("APPLIANCE_GUEST") == "1":
        return True
    try:
        return "appliance.guest=1" in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


@dataclass
class GuestRun:
    """One boot of the guest running a batch of guest tests for the host."""

    arch: str
    timeout: int
    nodeids: list[str] = field(default_factory=list)
    done: bool = False
    status: int | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Path | None = None
    seconds: float = 0.0
    problem: str = ""

    def run(self) -> None:
        self.done = True
        out = REPO / "qemu" / "out" / self.arch
        # APPLIANCE_GUEST_RUNNER: a stand-in for qemu/run.sh (the plugin's own tests).
        runner = os.environ.get("APPLIANCE_GUEST_RUNNER") or str(RUN_SH)
        if runner == str(RUN_SH) and not (out / "rootfs.img").exists():
            self.problem = f"no {self.arch} guest image: run qemu/build-image.sh {self.arch}"
            return
        # A stand-in's log stays in its own directory: the real guest's log in qemu/out may
        # be in use at the same moment (qemu/ci.sh runs while the host tests do).
        out = out if runner == str(RUN_SH) else Path.cwd()
        out.mkdir(parents=True, exist_ok=True)
        self.log = out / "guest-pytest.log"
        with tempfile.TemporaryDirectory(prefix="guest-tests.") as io_dir:
            report = "/run/guest-io/report.json"
            command = [
                runner,
                self.arch,
                "--timeout",
                str(self.timeout),
                "--io-dir",
                io_dir,
                "--",
                "python3",
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=-ra",
                "-v",
                f"--guest-report={report}",
                *self.nodeids,
            ]
            start = time.monotonic()
            with self.log.open("w") as log:
                try:
                    done = subprocess.run(
                        command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        timeout=self.timeout + 60,
                        check=False,
                    )
                    self.status = done.returncode
                except subprocess.TimeoutExpired:
                    self.status = 124
            self.seconds = time.monotonic() - start
            path = Path(io_dir) / "report.json"
            if path.exists():
                try:
                    self.results = json.loads(path.read_text())
                except ValueError:
                    self.problem = "the guest's test report is unreadable"
        if self.status == 124:
            self.problem = f"the guest did not finish within {self.timeout}s"
        elif self.status == 125:
            self.problem = "the guest did not boot or did not run pytest"

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class GuestPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.arch: str | None = config.getoption("--guest")
        self.inside = in_guest()
        self.batch: GuestRun | None = None
        self.deselected: list[pytest.Item] = []
        self.report_path: str | None = config.getoption("--guest-report")
        self.report: dict[str, dict[str, Any]] = {}

    # --- collection -----------------------------------------------------------

    @pytest.hookimpl(trylast=True)  # type: ignore[untyped-decorator]
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            guest = item.get_closest_marker("guest") is not None
            qemu = item.get_closest_marker("qemu") is not None
            if self.inside:
                (drop if qemu else keep).append(item)
            elif not guest and not qemu:
                keep.append(item)
            elif self.arch is not None:
                keep.append(item)
                if guest and not qemu:
                    self._run_remotely(item)
            elif IN_CI:
                keep.append(item)
                self._fail_ran_nowhere(item)
            else:
                drop.append(item)
        if drop:
            self.deselected = [] if self.inside else drop
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def _run_remotely(self, item: pytest.Item) -> None:
        assert self.arch is not None
        if self.batch is None:
            self.batch = GuestRun(self.arch, int(self.config.getoption("--guest-timeout")))
        self.batch.nodeids.append(item.nodeid)
        batch = self.batch

        def runtest() -> None:
            if not batch.done:
                batch.run()
            self._replay(item, batch)

        _replace_phases(item, runtest)

    def _fail_ran_nowhere(self, item: pytest.Item) -> None:
        def runtest() -> None:
            pytest.fail(
                "needs the QEMU guest and ran nowhere: in CI run it with --guest=ARCH "
                "(qemu/ci.sh does)",
                pytrace=False,
            )

        _replace_phases(item, runtest)

    def _replay(self, item: pytest.Item, batch: GuestRun) -> None:
        where = f"[{batch.arch} guest]"
        result = batch.results.get(item.nodeid)
        if result is None:
            why = batch.problem or f"qemu/run.sh exited with status {batch.status}"
            pytest.fail(
                f"{where} did not run in the guest: {why}\n"
                f"last lines of {batch.log}:\n{batch.tail()}",
                pytrace=False,
            )
        outcome = result.get("outcome")
        text = str(result.get("longrepr") or "")
        if outcome == "passed":
            return
        if outcome == "skipped":
            pytest.skip(f"{where} {text}")
        if outcome == "xfailed":
            pytest.xfail(f"{where} {text}")
        pytest.fail(f"{where} {outcome} in the guest:\n{text}", pytrace=False)

    # --- inside the guest: record the outcomes for the host ------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.report_path is None:
            return
        entry = self.report.setdefault(report.nodeid, {"outcome": "passed", "longrepr": ""})
        wasxfail = getattr(report, "wasxfail", None)
        if report.when == "call":
            entry["duration"] = round(report.duration, 3)
        if report.skipped:
            entry["outcome"] = "xfailed" if wasxfail is not None else "skipped"
            if wasxfail is not None:
                entry["longrepr"] = str(wasxfail)
            elif isinstance(report.longrepr, tuple):
                entry["longrepr"] = str(report.longrepr[2]).removeprefix("Skipped: ")
            else:
                entry["longrepr"] = str(report.longrepr)
        elif report.failed:
            entry["outcome"] = "failed" if report.when == "call" else f"error at {report.when}"
            captured = "".join(
                f"\n----- {name} -----\n{content}" for name, content in report.sections
            )
            entry["longrepr"] = report.longreprtext + captured
        self._write_report()

    def _write_report(self) -> None:
        assert self.report_path is not None
        path = Path(self.report_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=1))
        tmp.replace(path)

    # --- reporting -----------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        if self.inside:
            return f"guest: running inside the QEMU test guest ({os.uname().machine})"
        if self.arch:
            return f"guest: tests marked guest run in the {self.arch} QEMU guest"
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.deselected:
            terminalreporter.write_line(
                f"guest: {len(self.deselected)} test(s) need the QEMU guest and were "
                "deselected: run them with `make test-guest` or pytest --guest=amd64|arm64",
                yellow=True,
            )
        batch = self.batch
        if batch is not None and batch.done:
            terminalreporter.write_line(
                f"guest: {len(batch.nodeids)} test(s) ran in the {batch.arch} guest "
                f"({batch.seconds:.0f}s with boot; exit status {batch.status}; log {batch.log})"
            )


def _replace_phases(item: pytest.Item, runtest: Any) -> None:
    """Run ``runtest`` instead of the test, without the test's fixtures."""
    item.setup = lambda: None  # type: ignore[method-assign]
    item.teardown = lambda: None  # type: ignore[method-assign]
    item.runtest = runtest  # type: ignore[method-assign]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("guest", "QEMU test guest")
    group.addoption(
        "--guest",
        choices=ARCHES,
        default=None,
        help="run the tests marked guest inside this QEMU guest (qemu/build-image.sh ARCH "
        "first), and the tests marked qemu against it",
    )
    group.addoption(
        "--guest-timeout",
        type=int,
        default=1800,
        help="seconds the guest may take for all guest tests, boot included (default 1800)",
    )
    group.addoption("--guest-report", default=None, help="(inside the guest) write outcomes here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "qemu: runs on the host and boots the QEMU test guest (needs --guest=ARCH)"
    )
    config.pluginmanager.register(GuestPlugin(config), "guest-plugin")


@pytest.fixture
def guest_arch(request: pytest.FixtureRequest) -> str:
    """The architecture of the guest that ``qemu`` tests boot (from --guest)."""
    arch = request.config.getoption("--guest")
    if arch is None:
        pytest.skip("needs --guest=ARCH")
    return str(arch)
