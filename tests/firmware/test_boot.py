"""The arm64 firmware image booted for real: qemu-system-aarch64 (TCG) with AAVMF, GRUB,
systemd. One QEMU run, four boots, driven by a hook unit that only the test images carry
(firmware/test.sh builds them):

1. slot A, version 1: the appliance gets READY; an update signed by an unknown key is
   refused and writes nothing; the good update (version 2) goes to slot B; reboot.
2. slot B, version 2 on trial: READY, so the boot check makes B the good slot; an update
   to version 3 (its appliance never gets READY) goes to slot A; reboot.
3. slot A, version 3 on trial: not READY, the boot check reboots.
4. GRUB's counter is spent: slot B, version 2 again, with A recorded as failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEST_DIR = Path(os.environ.get("FIRMWARE_TEST_DIR") or REPO / "firmware" / "out" / "test")
AAVMF = Path("/usr/share/AAVMF")
RUN_TIMEOUT = 1500.0  # four TCG boots and two slot writes, on a loaded 2-core machine

HOOK = r"""#!/bin/sh
# One boot of the firmware test: record what the box says, then act on its version.
io=/run/fwtest
n=0
while [ -e "$io/boots/$n" ]; do n=$((n + 1)); done
b="$io/boots/$n.new"
mkdir -p "$b"
appliance firmware status --json > "$b/status.json" 2> "$b/status.err"
systemctl show appliance.service -p ActiveState -p ActiveEnterTimestampMonotonic \
    -p NRestarts > "$b/service"
systemctl is-active appliance-boot-check.service > "$b/boot-check"
appliance status > "$b/appliance-status" 2>&1
echo $? > "$b/appliance-status.rc"
cut -d' ' -f1 /proc/uptime > "$b/uptime"
date +%s.%N > "$b/wall"
version=$(cat /usr/lib/appliance-firmware/version)
part() {
    for u in /sys/class/block/*/uevent; do
        if grep -qx "PARTNAME=$1" "$u"; then d=${u%/uevent}; echo "/dev/${d##*/}"; fi
    done
}
update() { # update NAME: the release in $io/NAME
    date +%s.%N > "$b/$1.start"
    appliance firmware update "$io/$1/firmware.json" --tries 1 > "$b/$1.out" 2>&1
    echo $? > "$b/$1.rc"
    date +%s.%N > "$b/$1.end"
}
case "$version" in
    1)
        dev=$(part root-b)
        head -c 64M "$dev" | sha256sum > "$b/root-b.before"
        cp /state/boot/grubenv "$b/grubenv.before"
        update badsig
        head -c 64M "$dev" | sha256sum > "$b/root-b.after"
        cp /state/boot/grubenv "$b/grubenv.after"
        update good
        next=reboot ;;
    2)
        if [ -e "$io/broken-sent" ]; then
            next=poweroff
        else
            : > "$io/broken-sent"
            update broken
            next=reboot
        fi ;;
    *) next="" ;;  # version 3: its boot check reboots
esac
mv "$b" "$io/boots/$n"
sync
[ -n "$next" ] && systemctl "$next"
exit 0
"""


@dataclass
class Boot:
    dir: Path
    seen: float  # host seconds after QEMU started when the record appeared

    def text(self, name: str) -> str:
        path = self.dir / name
        return path.read_text().strip() if path.exists() else ""

    def number(self, name: str) -> float:
        return float(self.text(name))

    @property
    def status(self) -> dict[str, object]:
        return json.loads(self.text("status.json") or "{}")  # type: ignore[no-any-return]

    @property
    def service(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.text("service").splitlines())

    def ready_wall(self) -> float:
        """Wall-clock time at which appliance.service got READY in this boot."""
        ready = int(self.service["ActiveEnterTimestampMonotonic"]) / 1e6
        return self.number("wall") - (self.number("uptime") - ready)


@dataclass
class Session:
    boots: list[Boot] = field(default_factory=list)
    console: str = ""
    status: int | None = None
    seconds: float = 0.0


def _boot_records(io: Path, start: float, seen: dict[str, float]) -> None:
    for entry in sorted((io / "boots").glob("[0-9]*")):
        if entry.name.isdigit() and entry.name not in seen:
            seen[entry.name] = time.monotonic() - start


@pytest.fixture(scope="module")
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    arch = request.config.getoption("--guest")
    if arch is None:
        pytest.skip("needs --guest=arm64")
    if arch != "arm64":
        pytest.skip("the firmware image is arm64")
    if not (TEST_DIR / "v1" / "firmware.img").exists():
        subprocess.run(
            [str(REPO / "firmware" / "test.sh"), "--build-only"], check=True, timeout=3600
        )
    run = TEST_DIR / f"run-{uuid.uuid4().hex[:8]}"
    io = run / "io"
    io.mkdir(parents=True)
    qemu: subprocess.Popen[bytes] | None = None
    try:
        for name in ("good", "broken", "badsig"):
            (io / name).mkdir()
            for item in ("slot.img", "firmware.json", "firmware.json.sig"):
                os.link(TEST_DIR / name / item, io / name / item)
        (io / "boots").mkdir()
        (io / "hook").write_text(HOOK)
        disk = run / "disk.img"
        subprocess.run(
            ["cp", "--sparse=always", str(TEST_DIR / "v1" / "firmware.img"), str(disk)], check=True
        )
        shutil.copy(AAVMF / "AAVMF_VARS.fd", run / "vars.fd")
        console = run / "console.log"
        command = [
            # timeout(1): QEMU goes even if this process is killed first.
            "timeout", "-k", "10", str(int(RUN_TIMEOUT) + 60),
            "nice", "-n", "10", "qemu-system-aarch64",
            "-machine", "virt", "-cpu", "max,pauth-impdef=on", "-accel", "tcg",
            "-smp", "2", "-m", "1024", "-nodefaults", "-display", "none",
            "-drive", f"if=pflash,format=raw,readonly=on,file={AAVMF / 'AAVMF_CODE.fd'}",
            "-drive", f"if=pflash,format=raw,file={run / 'vars.fd'}",
            "-drive", f"file={disk},if=virtio,format=raw",
            "-device", "virtio-rng-pci",
            "-virtfs", f"local,path={io},mount_tag=fwtest,security_model=none",
            "-serial", f"file:{console}", "-monitor", "none",
        ]  # fmt: skip
        result = Session()
        seen: dict[str, float] = {}
        start = time.monotonic()
        qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        while qemu.poll() is None and time.monotonic() - start < RUN_TIMEOUT:
            _boot_records(io, start, seen)
            time.sleep(0.5)
        result.seconds = time.monotonic() - start
        if qemu.poll() is None:
            qemu.kill()
        result.status = qemu.wait(timeout=30)
        _boot_records(io, start, seen)
        result.boots = [Boot(io / "boots" / n, seen[n]) for n in sorted(seen, key=int)]
        result.console = console.read_text(errors="replace") if console.exists() else ""
        if console.exists():
            shutil.copy(console, TEST_DIR / "last-console.log")
        _write_measurements(result)
        yield result
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait(timeout=30)
        shutil.rmtree(run, ignore_errors=True)


def _write_measurements(s: Session) -> None:
    """Figures of this run, for the record (never part of a verdict)."""
    out: dict[str, object] = {"qemu_seconds": round(s.seconds, 1)}
    try:
        first = s.boots[0]
        out["first_boot_record_after_qemu_start_s"] = round(first.seen, 1)
        out["kernel_to_ready_s"] = round(
            int(first.service["ActiveEnterTimestampMonotonic"]) / 1e6, 1
        )
        out["slot_write_s"] = round(first.number("good.end") - first.number("good.start"), 1)
        out["ab_update_to_ready_s"] = round(s.boots[1].ready_wall() - first.number("good.start"), 1)
        second = s.boots[1]
        out["fallback_to_ready_s"] = round(
            s.boots[2].ready_wall() - second.number("broken.start"), 1
        )
    except (IndexError, KeyError, ValueError):
        pass
    (TEST_DIR / "measurements.json").write_text(json.dumps(out, indent=1) + "\n")


def _boot(s: Session, index: int) -> Boot:
    if len(s.boots) <= index:
        tail = "\n".join(s.console.splitlines()[-40:])
        pytest.fail(f"boot {index + 1} never reached the test hook (QEMU {s.status}):\n{tail}")
    return s.boots[index]


def test_image_boots_to_ready_under_systemd(session: Session) -> None:
    boot = _boot(session, 0)
    assert boot.status["running_slot"] == "A"
    assert boot.status["version"] == 1
    assert boot.service["ActiveState"] == "active"
    assert boot.text("appliance-status.rc") == "0", boot.text("appliance-status")
    assert boot.text("boot-check") == "active"
    assert "firmware: slot A version 1 is good (appliance READY)" in session.console


def test_update_with_a_bad_signature_is_refused_and_writes_nothing(session: Session) -> None:
    boot = _boot(session, 0)
    assert boot.text("badsig.rc") == "2"
    assert "bad signature: no signature by a trusted key" in boot.text("badsig.out")
    assert len(boot.text("badsig.out").splitlines()) == 1
    assert boot.text("root-b.before") == boot.text("root-b.after")
    assert (boot.dir / "grubenv.before").read_bytes() == (boot.dir / "grubenv.after").read_bytes()


def test_update_to_a_good_image_switches_slot(session: Session) -> None:
    first = _boot(session, 0)
    assert first.text("good.rc") == "0", first.text("good.out")
    assert "version 2 written to slot B" in first.text("good.out")
    boot = _boot(session, 1)
    assert boot.status["running_slot"] == "B"
    assert boot.status["version"] == 2
    assert boot.status["good_slot"] == "B"
    assert boot.status["on_trial"] is False
    assert boot.service["ActiveState"] == "active"


def test_update_to_a_broken_image_falls_back(session: Session) -> None:
    second = _boot(session, 1)
    assert second.text("broken.rc") == "0", second.text("broken.out")
    assert "version 3 written to slot A" in second.text("broken.out")
    assert "firmware: slot A version 3 on trial:" in session.console
    assert "firmware: slot A never reached READY: back to slot B" in session.console
    boot = _boot(session, 2)
    assert boot.status["running_slot"] == "B"
    assert boot.status["version"] == 2
    assert boot.status["good_slot"] == "B"
    assert boot.status["failed_slot"] == "A"
    assert boot.service["ActiveState"] == "active"
    assert len(session.boots) == 3  # the broken slot never got as far as the hook
    assert session.status == 0  # the last boot powered off
