"""What fsync's 0 means. fsync waits for the server's answer about the
contact, up to fsync_timeout; with no answer by then (or offline) it returns
0 as for a local file, but only once the change is on disk: the cache
commits with synchronous=NORMAL, which survives a crash of the daemon but
not a power cut, so fsync must put the WAL on disk itself. The daemon runs
under strace to see that it does."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, server_contacts, wait_until

CARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Fsync Fiona\r\nN:Fiona;Fsync;;;\r\n"
        "EMAIL:fiona@example.com\r\nEND:VCARD\r\n")


class Strace:
    """strace on every thread of a running daemon: its fsync calls, with
    the path of each descriptor."""

    def __init__(self, pid, tmp):
        if not shutil.which("strace"):
            pytest.skip("strace is missing (scripts/setup installs it)")
        self.log = tmp / "strace.log"
        self.err = tmp / "strace.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=fsync,fdatasync",
                                          "-o", str(self.log), "-p", str(pid)],
                                         stdout=subprocess.DEVNULL, stderr=err)
        wait_until(lambda: "attached" in self.err.read_text() or self.proc.poll() is not None,
                   timeout=30, what="strace to attach")
        if self.proc.poll() is not None:
            pytest.skip("strace cannot attach here: %s" % self.err.read_text())

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return self.log.read_text()


def wal_synced(text):
    return re.search(r"\b(fsync|fdatasync)\(\d+<[^>]*/cache\.db-wal>\) = 0", text)


def warm_up(root):
    """Commit something first: SQLite syncs a WAL it has just created, which
    would hide whether fsync itself does."""
    (root / "warm-up.txt").write_text("a scratch file\n")
    (root / "warm-up.txt").unlink()


def write_and_fsync(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, CARD.encode())
        t = time.monotonic()
        os.fsync(fd)  # raises on an error: the test wants 0
        return time.monotonic() - t
    finally:
        os.close(fd)


def test_fsync_with_no_answer_within_fsync_timeout_returns_0_with_the_change_on_disk(tmp_path):
    with Emulator("--contacts", "1") as emu:
        with Mount(emu, tmp_path, fsync_timeout=1) as m:
            m.wait_synced()
            warm_up(m.root)
            emu.faults({"latency_ms": 5000})
            st = Strace(m.proc.pid, tmp_path)
            try:
                took = write_and_fsync(m.root / "Fsync Fiona.vcf")
            finally:
                calls = st.stop()
            assert 0.9 <= took < 4.5, "fsync took %.1f s, fsync_timeout is 1 s" % took
            assert wal_synced(calls), "fsync returned 0 without the WAL on disk:\n" + calls
            assert re.search(r"^pending changes: [1-9]", (m.root / ".contactfs" / "status")
                             .read_text(), re.M)
            emu.faults({"latency_ms": 0})
            m.wait_synced()
        # Not lost: sent once the server answered again.
        assert any(c.get("displayName") == "Fsync Fiona" for c in server_contacts(emu))


def test_fsync_offline_returns_0_with_the_change_on_disk(tmp_path):
    with Emulator("--contacts", "1") as emu, Mount(emu, tmp_path, offline=True) as m:
        warm_up(m.root)
        st = Strace(m.proc.pid, tmp_path)
        try:
            write_and_fsync(m.root / "Fsync Fiona.vcf")
        finally:
            calls = st.stop()
        assert wal_synced(calls), "fsync returned 0 without the WAL on disk:\n" + calls


def test_fsync_of_a_directory_puts_its_changes_on_disk(tmp_path):
    with Emulator("--contacts", "1") as emu, Mount(emu, tmp_path, offline=True) as m:
        warm_up(m.root)
        st = Strace(m.proc.pid, tmp_path)
        try:
            (m.root / "Friends").mkdir()
            fd = os.open(m.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            calls = st.stop()
        assert wal_synced(calls), "fsync of the directory left the WAL unsynced:\n" + calls
