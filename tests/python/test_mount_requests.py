"""What the kernel asks the mount for: the FUSE requests a written file costs
(counted from the daemon's -d log), and what answers the kernel no longer
works out itself because the mount does not ask it to check modes."""
import collections
import os
import re
import subprocess
import time

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, need_fuse

CARDS = 40


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


def write_cards(src):
    src.mkdir()
    for i in range(CARDS):
        (src / ("new-%03d.vcf" % i)).write_text(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:requests-%d\r\nFN:Person %d\r\n"
            "N:Person %d;Ann;;;\r\nEMAIL:ann%d@example.org\r\nEND:VCARD\r\n" % (i, i, i, i),
            newline="")


def requests_in(log_tail):
    """(opcode, nodeid) of each request in a piece of the -d log."""
    return re.findall(r"^unique: \d+, opcode: (\w+) \(\d+\), nodeid: (\d+),", log_tail, re.M)


def super_options(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if fields[4] == path:
                return fields[-1].strip().split(",")
    raise AssertionError("%s is not mounted" % path)


def test_rsync_of_new_cards_costs_14_requests_a_file_and_no_folder_getattr(tmp_path):
    # rsync -a writes a temporary file, sets its mode and times, and
    # renames it. Each create and rename makes the kernel drop the folder's
    # attributes; with default_permissions it asked for them again before
    # the next look-up in the folder: two GETATTRs a file more (16 in all).
    src = tmp_path / "src"
    write_cards(src)
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path, extra_args=["-d"]) as m:
        folder = m.root / "Imported"
        folder.mkdir()
        m.wait_synced()
        start = m.log_path.stat().st_size
        subprocess.run(["rsync", "-a", str(src) + "/", str(folder) + "/"], check=True)
        time.sleep(0.5)  # the last RELEASE is sent after close returns
        with open(m.log_path, "rb") as f:
            f.seek(start)
            reqs = requests_in(f.read().decode(errors="replace"))
        assert sorted(os.listdir(folder)) == sorted(os.listdir(src))
        m.wait_synced()
    ops = collections.Counter(op for op, _ in reqs)
    dir_node = ino_of_folder(reqs)
    folder_getattrs = sum(1 for op, node in reqs if op == "GETATTR" and node == dir_node)
    assert folder_getattrs <= 2, ops
    assert len(reqs) <= 14 * CARDS + 10, ops


def ino_of_folder(reqs):
    """The folder rsync wrote into: the node every CREATE is sent to."""
    nodes = {node for op, node in reqs if op == "CREATE"}
    assert len(nodes) == 1, nodes
    return nodes.pop()


def test_access_answers_from_the_owners_mode_bits(tmp_path):
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        card = next(p for p in m.root.iterdir() if p.suffix == ".vcf")
        ctl = m.root / ".contactfs"
        assert os.access(card, os.R_OK | os.W_OK)
        assert not os.access(card, os.X_OK)
        assert os.access(m.root, os.R_OK | os.W_OK | os.X_OK)
        # What open and create refuse, access says no to as well.
        assert os.access(ctl / "status", os.R_OK)
        assert not os.access(ctl / "status", os.W_OK)
        assert not os.access(ctl, os.W_OK)
        assert os.access(ctl, os.R_OK | os.X_OK)
        assert os.access(ctl / "categories", os.R_OK | os.W_OK)
        assert subprocess.run(["test", "-w", str(ctl / "errors")]).returncode == 1


def test_the_kernel_checks_modes_only_when_other_users_reach_the_mount(tmp_path):
    with Emulator("--contacts", "1") as emu:
        with Mount(emu, tmp_path / "own") as m:
            assert "default_permissions" not in super_options(m.root)
        with Mount(emu, tmp_path / "shared", allow_other=True) as m:
            opts = super_options(m.root)
            assert "default_permissions" in opts and "allow_other" in opts
