"""Mount contactfs for a test: start `contactfs -f` against an emulator,
wait until the mount answers, and on the way out unmount, wait for the
daemon, and fail if it exited non-zero or logged an error the test did not
expect.

    with Emulator("--contacts", "20") as emu, Mount(emu, tmp_path) as m:
        names = os.listdir(m.root)
        ...

Nothing here knows where the checkout lives (see conftest.contactfs_bin).
"""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import contactfs_bin


def fuse_available():
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def need_fuse():
    """Skip (with the reason) where FUSE cannot be used."""
    if not fuse_available():
        pytest.skip("/dev/fuse or fusermount3 is missing: the mount tests need FUSE")


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if mp == path:
                return True
    return False


def mount_options(emu, **extra):
    opts = {"graph_url": emu.url + "/v1.0", "auth_url": emu.url,
            "token_cmd": "echo " + emu.token}
    opts.update(extra)
    parts = []
    for k, v in opts.items():
        if v is True:
            parts.append(k)
        elif v is not None and v is not False:
            parts.append("%s=%s" % (k, str(v).replace("\\", "\\\\").replace(",", "\\,")))
    return ",".join(parts)


class Mount:
    """contactfs -f mounted at tmp/mnt with its cache in tmp/cache.

    expect_errors: regular expressions for "error:" lines of the daemon's
    log that the test provokes on purpose; any other error line fails the
    test at unmount.
    """

    def __init__(self, emu, tmp, *, poll=2, expect_errors=(), extra_args=(), cache=None,
                 root=None, ready_timeout=60, **opts):
        self.emu = emu
        self.tmp = Path(tmp)
        self.root = Path(root) if root else self.tmp / "mnt"
        self.cache = Path(cache) if cache else self.tmp / "cache"
        self.poll = poll
        self.opts = dict(opts)
        self.expect_errors = [re.compile(e) for e in expect_errors]
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.log_path = None
        self.stop_timed_out = False     # the last stop had to kill the daemon

    # ---- lifecycle --------------------------------------------------------

    def command(self):
        o = mount_options(self.emu, cache_dir=str(self.cache), poll=self.poll, **self.opts)
        return [str(contactfs_bin()), "-f", "-o", o, *self.extra_args, str(self.root)]

    def start(self):
        need_fuse()
        self.root.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            self.log_path = self.tmp / ("daemon%s.log" % (n or ""))
            if not self.log_path.exists():
                break
            n += 1
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("contactfs exited %d before mounting:\n%s"
                                     % (self.proc.returncode, self.log_text()))
            if is_mounted(self.root):
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError("contactfs did not mount within %ds:\n%s"
                             % (self.ready_timeout, self.log_text()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)

    def stop(self, check=True, timeout=90):
        """Unmount and wait for the daemon; with check, fail unless it exited 0
        without unexpected errors."""
        if self.proc is None:
            return
        if is_mounted(self.root):
            subprocess.run(["fusermount3", "-u", str(self.root)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_timed_out = True
            self.kill()
            if check:
                raise AssertionError("contactfs did not exit within %ds of the unmount:\n%s"
                                     % (timeout, self.log_text()))
            return
        finally:
            self.log.close()
        self.proc = None
        if check:
            assert rc == 0, "contactfs exited %d:\n%s" % (rc, self.log_text())
            bad = self.unexpected_errors()
            assert not bad, "contactfs logged unexpected errors:\n" + "\n".join(bad)

    def kill(self):
        """kill -9 the daemon and clear the dead mount."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.root)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # ---- what the daemon said -----------------------------------------------

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def unexpected_errors(self):
        """Error lines (and sanitizer reports) no expect_errors pattern
        matches. Warnings are allowed."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("contactfs: error:") or "Sanitizer" in line \
                    or "runtime error:" in line:
                if not any(p.search(line) for p in self.expect_errors):
                    out.append(line)
        return out

    # ---- .contactfs --------------------------------------------------------

    def status(self):
        """.contactfs/status as a dict of its "key: value" lines."""
        d = {}
        for line in (self.root / ".contactfs" / "status").read_text().splitlines():
            if ": " in line and not line.startswith(" "):
                k, v = line.split(": ", 1)
                d[k] = v
        return d

    def errors(self):
        return (self.root / ".contactfs" / "errors").read_text()

    def last_sync(self):
        """When the last delta round ended, as status says it ("2026-12-05
        02:08:56 UTC"), without the "(N s ago)" that changes every second."""
        return self.status().get("last sync", "").split(" (")[0]

    def wait_rounds(self, n):
        """Let n more delta rounds end (each sets a new "last sync"; at one
        second's resolution, two rounds ending in one second count once,
        which only waits longer): the last of them began after this call."""
        before = self.last_sync()
        for _ in range(n):
            wait_until(lambda: self.last_sync() != before, timeout=30, what="a delta round")
            before = self.last_sync()

    def wait_synced(self, timeout=60):
        """Until nothing is pending (parked entries do not count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s.get("pending changes", "").startswith("0") and \
                    not s.get("last sync", "").startswith("never"):
                return s
            time.sleep(0.1)
        raise AssertionError("still pending after %ds: %s" % (timeout, self.status()))


# ---- the server's side ---------------------------------------------------------

def mailbox(emu, upn=None):
    """The emulator's mailbox (the only one unless upn says)."""
    st = emu.state()
    boxes = st["mailboxes"] if "mailboxes" in st else st
    if upn:
        return boxes[upn]
    assert len(boxes) >= 1
    return next(iter(boxes.values()))


def server_contacts(emu, upn=None):
    return mailbox(emu, upn)["contacts"]


def folder_paths(box):
    """folder id -> path relative to the mount root ("" for the default)."""
    folders = {f["id"]: f for f in box["folders"]}
    out = {}

    def path(fid):
        if fid in out:
            return out[fid]
        f = folders[fid]
        if f.get("isDefault"):
            out[fid] = ""
        else:
            parent = path(f["parentFolderId"]) if f.get("parentFolderId") in folders else ""
            out[fid] = (parent + "/" if parent else "") + f["displayName"]
        return out[fid]

    for fid in folders:
        path(fid)
    return out


def vcf_files(root):
    """Every .vcf under root (not .contactfs), as relative paths."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.endswith(".vcf") and not f.startswith("."):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def wait_until(pred, timeout=30, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))
