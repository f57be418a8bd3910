#!/usr/bin/python3
"""A seeded, model-checked chaos run of the whole mount (issue 17).

The emulator with a generated mailbox, contactfs mounted through a TCP proxy
(so the server can go away), N writer threads saving contacts the way real
programs do, remote changes through Graph, faults, kill -9 and remounts.
Every save whose close() returned 0 is an acknowledged edit; at quiesce
points (writers paused, faults off, nothing pending, a delta round) the
driver checks the invariants of issue 17 and, on a violation, prints the
seed and the command that replays it.

The action stream is a function of the seed (one random.Random per writer
and one for the conductor, all derived from it); the timing is not, so a
replay runs the same actions with a different interleaving.
"""
import argparse
import collections
import errno
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))

from emulator_proc import Emulator  # noqa: E402
from mount_proc import Mount, folder_paths, mailbox, wait_until  # noqa: E402
from conftest import unescape_text  # noqa: E402
from test_mount_sync import TcpProxy, Via, graph  # noqa: E402

EXT = "org.contactfs.vcard"
# Write requests (POST, PATCH, PUT, DELETE, batch items included) per acknowledged
# change, plus a constant for the driver's own remote changes: an edit is one
# PATCH, a create a POST and an extension, a move a create and a delete (with
# photo and extension), and each fault may cost one retry.
WRITES_PER_CHANGE = 6
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


class Violation(Exception):
    pass


def log(*a):
    print("soak: %7.1fs" % (time.monotonic() - T0), *a, flush=True)


T0 = time.monotonic()


# ---- vCards ---------------------------------------------------------------------

def unfold(text):
    return re.sub(r"\r?\n[ \t]", "", text)


def card_props(data):
    """{NAME: [raw values]} of the first card of data (bytes)."""
    out = collections.defaultdict(list)
    for line in re.split(r"\r?\n", unfold(data.decode("utf-8", "replace"))):
        m = re.match(r"(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)(;[^:]*)?:(.*)$", line)
        if m:
            out[m.group(1).upper()].append(m.group(3))
    return out


def with_note(data, note):
    """The card data (bytes) with its NOTE lines replaced by one NOTE:note."""
    lines = [ln for ln in re.split(r"\r?\n", unfold(data.decode("utf-8")))
             if ln and not re.match(r"(?i)(?:[A-Za-z0-9-]+\.)?NOTE[;:]", ln)]
    end = max(i for i, ln in enumerate(lines) if ln.upper() == "END:VCARD")
    lines.insert(end, "NOTE:" + note)
    return ("\r\n".join(lines) + "\r\n").encode()


def new_card(uid, fn, note):
    given, _, sur = fn.partition(" ")
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:%s\r\nFN:%s\r\nN:%s;%s;;;\r\n"
            "EMAIL;TYPE=INTERNET:%s@example.org\r\nNOTE:%s\r\nEND:VCARD\r\n"
            % (uid, fn, sur, given, uid, note)).encode()


# ---- the model ------------------------------------------------------------------

class Model:
    """What the driver did and was told: acknowledged local edits, remote
    changes, creates and deletes, by contact UID."""

    def __init__(self):
        self.lock = threading.Lock()
        self.local = {}            # uid -> (note, t_start, t_end) of the last acked edit
        self.remote = {}           # uid -> (note, t) of the last remote edit
        self.read = {}             # note of an acked local edit -> the note its writer read
        self.created = set()       # uids the driver created (locally or remotely)
        self.deleted = {}          # uid -> t of an acked rm (local) or a remote DELETE
        self.uncertain = set()     # uids whose last local operation failed half-way
        self.busy = set()          # uids a writer holds now
        self.moved = set()         # uids moved here since the last quiesce point
        self.racy_delete = set()   # uids deleted remotely while their move may be under way
        self.interrupted = set()   # uids a writer was saving when the daemon was killed
        self.counts = collections.Counter()

    def ack(self, uid, note, t0, read=None):
        with self.lock:
            self.local[uid] = (note, t0, time.monotonic())
            self.read[note] = read
            self.deleted.pop(uid, None)
            self.uncertain.discard(uid)
            self.counts["acked"] += 1


# ---- the run --------------------------------------------------------------------

class Soak:
    def __init__(self, args, work):
        self.args = args
        self.work = Path(work)
        self.rng = random.Random(args.seed)
        self.model = Model()
        self.emu = None
        self.proxy = None
        self.mount = None
        self.pause = threading.Event()      # set: writers must stop
        self.idle = [threading.Event() for _ in range(args.writers)]
        self.stop_all = threading.Event()
        self.mount_lock = threading.RLock()  # held while the mount is replaced
        self.counts = collections.Counter()
        self.seq = 0
        self.seq_lock = threading.Lock()
        self.writes = 0
        self.failure = None
        self.mounts = 0
        self.journal = open(self.work / "journal.txt", "a", buffering=1)
        self.journal_lock = threading.Lock()

    def note(self, *a):
        """One line of the run's journal (work directory), for the analysis of
        a violation: when, who, what, on which file and contact."""
        with self.journal_lock:
            self.journal.write("%.3f %s\n" % (time.monotonic() - T0, " ".join(map(str, a))))

    def next_tag(self, who):
        with self.seq_lock:
            self.seq += 1
            return "soak-%s-%d" % (who, self.seq)

    # -- the mount --
    def mount_up(self, synced=False):
        if self.args.asan:
            os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        # A fresh mount point each time: a writer that was mid-action at a
        # kill writes into the bare directory left behind, where a close
        # returns 0 for a file the mount never saw (see void_bare_writes).
        self.mounts += 1
        self.mount = Mount(Via(self.emu, self.proxy), self.work, poll=2,
                           cache=self.work / "cache",
                           root=self.work / ("mnt%d" % self.mounts)).start()
        if synced:
            self.mount.wait_synced(timeout=300)

    def mount_dead_check(self):
        if self.failure:
            raise self.failure
        p = self.mount.proc
        if p is not None and p.poll() is not None:
            raise Violation("invariant 4: the daemon died (exit %s) without our SIGKILL; log %s"
                            % (p.returncode, self.mount.log_path))

    def sanitizer_check(self):
        bad = [ln for ln in self.mount.log_text().splitlines()
               if "Sanitizer" in ln or "runtime error:" in ln]
        if bad:
            raise Violation("invariant 4: sanitizer report in %s:\n%s"
                            % (self.mount.log_path, "\n".join(bad[:20])))

    # -- server side --
    def box(self):
        return mailbox(self.emu)

    @staticmethod
    def uid_of(c):
        for e in c.get("extensions") or []:
            if (e.get("extensionName") == EXT or str(e.get("id", "")).endswith(EXT)) \
                    and e.get("uid"):
                return e["uid"]
        return c["id"]

    def contact_path(self, box, c):
        if c["parentFolderId"] == box["defaultFolderId"]:
            return "/contacts/" + c["id"]
        return "/contactFolders/%s/contacts/%s" % (c["parentFolderId"], c["id"])

    def remote_call(self, method, path, body=None, headers=None):
        for _ in range(10):
            try:
                return graph(self.emu, method, path, body, headers=headers)
            except Exception as e:  # noqa: BLE001 - 429/503/412 from faults or races
                code = getattr(e, "code", None)
                if code in (429, 503):
                    time.sleep(float(e.headers.get("Retry-After") or 1) + 0.1)
                    continue
                return e
        return RuntimeError("still throttled after 10 tries")

    def remote_burst(self, rng):
        """0-3 remote changes, as Outlook or a phone would make them."""
        box = self.box()
        cs = sorted(box["contacts"], key=lambda c: c["id"])
        for _ in range(rng.randint(0, 3)):
            if not cs:
                break
            kind = rng.choices(["edit", "edit_busy", "delete", "create", "rename_folder"],
                               [5, 3, 1, 1, 1])[0]
            with self.model.lock:
                busy = sorted(self.model.busy)
            c = rng.choice(cs)
            if kind == "edit_busy" and busy:
                uid = rng.choice(busy)
                c = next((x for x in cs if self.uid_of(x) == uid), c)
            uid = self.uid_of(c)
            if kind in ("edit", "edit_busy"):
                # Read, then write what was read (If-Match): the edit is made
                # from exactly the note it replaces, which the model records
                # as a writer's read note, so an acknowledged local edit it
                # overwrote is known to have reached the server first.
                note = self.next_tag("r")
                path = self.contact_path(box, c)
                cur = self.remote_call("GET", path + "?$select=personalNotes,changeKey")
                r = cur
                if isinstance(cur, dict):
                    r = self.remote_call("PATCH", path, {"personalNotes": note},
                                         headers={"If-Match": cur.get("changeKey") or ""})
                self.note("remote edit", uid, note, "->", "ok" if isinstance(r, dict) else r,
                          "read", cur.get("personalNotes") if isinstance(cur, dict) else None)
                if isinstance(r, dict):
                    with self.model.lock:
                        self.model.remote[uid] = (note, time.monotonic())
                        self.model.read[note] = cur.get("personalNotes") or ""
                    self.counts["remote edits"] += 1
            elif kind == "delete":
                r = self.remote_call("DELETE", self.contact_path(box, c))
                self.note("remote delete", uid, "->", r)
                if not isinstance(r, Exception):
                    with self.model.lock:
                        # A move is a copy made in the target, then the source
                        # deleted (docs/design.md, Moves): a delete of the source
                        # while that is under way deletes a copy the move
                        # replaces, and the contact lives on in the target.
                        if uid in self.model.moved:
                            self.model.racy_delete.add(uid)
                        self.model.deleted[uid] = time.monotonic()
                        self.model.remote[uid] = (None, time.monotonic())
                    self.counts["remote deletes"] += 1
                cs.remove(c)
            elif kind == "create":
                tag = self.next_tag("rc")
                r = self.remote_call("POST", "/contacts", {
                    "givenName": "Remote", "surname": tag, "displayName": "Remote " + tag,
                    "personalNotes": tag})
                if isinstance(r, dict):
                    with self.model.lock:
                        self.model.created.add(r["id"])
                        self.model.remote[r["id"]] = (tag, time.monotonic())
                    self.counts["remote creates"] += 1
            else:
                fs = sorted((f for f in box["folders"] if not f.get("isDefault")),
                            key=lambda f: f["id"])
                if fs:
                    f = rng.choice(fs)
                    name = "Renamed " + self.next_tag("f")
                    r = self.remote_call("PATCH", "/contactFolders/" + f["id"],
                                         {"displayName": name})
                    self.note("remote folder rename", f["displayName"], "->", name,
                              "ok" if isinstance(r, dict) else r)
                    if isinstance(r, dict):
                        self.counts["remote folder renames"] += 1

    # -- writers --
    def writer(self, i):
        rng = random.Random("%d/%d" % (self.args.seed, i))
        scratch = Path(tempfile.mkdtemp(prefix="w%d-" % i, dir=self.work))
        while not self.stop_all.is_set():
            if self.pause.is_set():
                self.idle[i].set()
                time.sleep(0.05)
                continue
            self.idle[i].clear()
            try:
                self.one_action(i, rng, scratch)
            except Violation as v:
                self.failure = self.failure or v
                self.pause.set()
            except Exception as e:  # noqa: BLE001 - the mount may be dead or offline
                self.counts["failed actions"] += 1
                if self.counts["failed actions"] <= 20 or not isinstance(e, OSError):
                    log("writer %d: %s" % (i, "".join(traceback.format_exception_only(e)).strip()))
            time.sleep(rng.uniform(0, 1))
        self.idle[i].set()

    def files(self, root):
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out += [Path(dirpath) / f for f in sorted(filenames)
                    if f.endswith(".vcf") and not f.startswith(".")]
        return out

    def dirs(self, root):
        out = [Path(root)]
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out += [Path(dirpath) / d for d in dirnames]
        return out

    def one_action(self, i, rng, scratch):
        root = self.mount.root
        kind = rng.choices(
            ["inplace", "temp_rename", "rename_away", "link_unlink", "cp", "rsync", "tar",
             "create", "delete", "move", "mkdir", "rmdir", "rename_dir", "invalid", "multi"],
            [6, 5, 4, 3, 3, 3, 2, 3, 1, 2, 1, 1, 1, 1, 1])[0]
        if kind == "mkdir":
            os.mkdir(root / ("Soak %s" % self.next_tag("d%d" % i)))
            self.counts["mkdir"] += 1
            return
        dirs = self.dirs(root)
        if kind == "rmdir":
            d = rng.choice(dirs)
            if d != root and not os.listdir(d):
                os.rmdir(d)
                self.counts["rmdir"] += 1
            return
        if kind == "rename_dir":
            d = rng.choice(dirs)
            if d != root and d.name.startswith("Soak "):
                new = d.parent / ("Soak %s" % self.next_tag("n%d" % i))
                os.rename(d, new)
                self.note("w%d" % i, "rename dir", d.relative_to(root), "->", new.relative_to(root))
                self.counts["rename_dir"] += 1
            return
        if kind == "invalid":
            p = rng.choice(dirs) / ("Broken %s.vcf" % self.next_tag("b%d" % i))
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            # After a kill the mount point is a bare directory of the work
            # directory's file system, where any close returns 0.
            bare = os.fstat(fd).st_dev == os.stat(self.work).st_dev
            os.write(fd, b"this is not a vCard at all\r\njust some text\r\n")
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.counts["invalid cards refused"] += 1
                os.unlink(p)
                return
            if bare:
                self.note("void: an invalid card written after a kill, not through the mount:", p)
                return
            raise Violation("an invalid card at %s closed with 0" % p)
        if kind in ("create", "multi"):
            d = rng.choice(dirs)
            cards = []
            for _ in range(1 if kind == "create" else 2):
                tag = self.next_tag("c%d" % i)
                cards.append((tag, new_card(tag, "Soak %s" % tag, tag)))
            name = "Soak %s.vcf" % cards[0][0] if kind == "create" else \
                "import-%s.vcf" % cards[0][0]
            t0 = time.monotonic()
            with self.model.lock:
                for tag, _ in cards:
                    self.model.created.add(tag)
                    self.model.uncertain.add(tag)
            with open(d / name, "xb") as f:
                f.write(b"".join(c for _, c in cards))
            for tag, _ in cards:
                self.model.ack(tag, tag, t0)
            self.counts["creates"] += len(cards)
            return
        # A file of several cards is split into contacts by the mount; until
        # then it is nobody's contact.
        files = [f for f in self.files(root) if not f.name.startswith("import-")]
        if not files:
            return
        p = rng.choice(files)
        props = card_props(p.read_bytes())
        if not props.get("UID"):
            return
        uid = props["UID"][0]
        with self.model.lock:
            if uid in self.model.busy:
                return
            self.model.busy.add(uid)
        try:
            # Read again under the claim: another writer may have moved or
            # saved it since (writing stale bytes back would be a copy or a
            # local conflict, which the model does not expect of one user).
            data = p.read_bytes()
            if card_props(data).get("UID", [""])[0] != uid:
                return
            self.note("w%d" % i, kind, "start", uid, p.relative_to(root))
            self.save(i, rng, kind, p, data, uid, scratch, dirs)
            self.note("w%d" % i, kind, "done", uid)
        finally:
            with self.model.lock:
                self.model.busy.discard(uid)

    def save(self, i, rng, kind, p, data, uid, scratch, dirs):
        t0 = time.monotonic()
        with self.model.lock:
            self.model.uncertain.add(uid)
        if kind == "delete":
            os.unlink(p)
            with self.model.lock:
                self.model.deleted[uid] = time.monotonic()
                self.model.local.pop(uid, None)
                self.model.uncertain.discard(uid)
            self.counts["deletes"] += 1
            return
        if kind == "move":
            d = rng.choice(dirs)
            if d == p.parent or (d / p.name).exists():
                with self.model.lock:
                    self.model.uncertain.discard(uid)
                return
            with self.model.lock:
                self.model.moved.add(uid)
            os.rename(p, d / p.name)
            self.note("w%d" % i, "moved", uid, "to", (d / p.name).relative_to(self.mount.root))
            self.counts["moves"] += 1
            with self.model.lock:
                self.model.uncertain.discard(uid)
            return
        note = self.next_tag("w%d" % i)
        new = with_note(data, note)
        src = scratch / p.name
        src.write_bytes(new)
        if kind == "inplace":
            with open(p, "r+b") as f:
                f.truncate(0)
                f.write(new)
        elif kind == "temp_rename":
            tmp = p.parent / (".goutputstream-%s" % note)
            tmp.write_bytes(new)
            os.rename(tmp, p)
        elif kind == "rename_away":
            bak = p.parent / (p.name + "~")
            os.rename(p, bak)
            p.write_bytes(new)
            os.unlink(bak)
        elif kind == "link_unlink":
            # vdirsyncer's and khard's way: a scratch file linked to the name
            tmp = p.parent / ("tmp%s" % note)
            tmp.write_bytes(new)
            os.unlink(p)
            os.link(tmp, p)
            os.unlink(tmp)
        elif kind == "cp":
            self.run(["cp", str(src), str(p)])
        elif kind == "rsync":
            self.run(["rsync", "--checksum", str(src), str(p)])
        elif kind == "tar":
            tarball = scratch / "t.tar"
            self.run(["tar", "cf", str(tarball), "-C", str(scratch), p.name])
            self.run(["tar", "xf", str(tarball), "-C", str(p.parent)])
        read = "\n".join(unescape_text(v) for v in card_props(data).get("NOTE", []))
        self.model.ack(uid, note, t0, read)
        self.note("w%d" % i, kind, "acked", uid, note, "read", read)
        self.counts["saves " + kind] += 1

    @staticmethod
    def run(cmd):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise OSError(errno.EIO, "%s: %s" % (" ".join(cmd), r.stderr.strip()))

    # -- faults, kills --
    def fault_epoch(self, rng):
        knobs = {"rate_429": 0, "rate_503": 0, "rate_drop_after": 0, "latency_ms": 0,
                 "retry_after": 1}
        for k in rng.sample(["rate_429", "rate_503", "rate_drop_after", "latency_ms"],
                            rng.randint(0, 2)):
            knobs[k] = {"rate_429": 0.05, "rate_503": 0.05, "rate_drop_after": 0.03,
                        "latency_ms": rng.choice([50, 300])}[k]
        if knobs["rate_429"]:
            knobs["retry_after"] = rng.choice([1, 2, 0.5])
        self.emu.faults(knobs)
        return knobs

    def server_idle(self):
        """Until the server has finished what it was sent: the requests of a
        killed daemon, or of one cut off by the proxy, still run there, and a
        new daemon's would count on top of them."""
        def idle():
            r = self.emu.requests()
            return not r["in_flight"] and not r["serving"]

        # Twice, a moment apart: a request the proxy still carries arrives
        # after the first look.
        for _ in range(2):
            wait_until(idle, timeout=120, what="the server's requests in flight to finish")
            time.sleep(0.2)
        wait_until(idle, timeout=120, what="the server's requests in flight to finish")

    def faults_off(self):
        self.emu.faults({"rate_429": 0, "rate_503": 0, "rate_drop_after": 0, "latency_ms": 0})

    def kill_and_remount(self):
        """A new daemon cannot know a Retry-After its predecessor was given:
        the counters are checked before the kill and zeroed after the remount."""
        self.sanitizer_check()
        self.epoch_requests()
        self.note("kill -9")
        self.mount.kill()
        with self.model.lock:
            # A save cut by the kill leaves what it leaves on a local disk
            # too: the original renamed to a backup (NAME~) and the new file
            # empty or not yet there.
            self.model.interrupted |= self.model.uncertain
        self.counts["kills"] += 1
        self.server_idle()
        self.mount_up()
        self.emu.admin("POST", "requests/reset")

    def clean_remount(self):
        # The 90 s our systemd unit gives a stop (TimeoutStopSec): a daemon still there
        # after it is killed, inside whatever Retry-After it was given.
        self.mount.stop(check=False, timeout=90)
        if self.mount.stop_timed_out:
            raise Violation("4: the daemon did not exit within 90 s of a clean unmount; log %s"
                            % self.mount.log_path)
        self.sanitizer_check()
        self.counts["clean remounts"] += 1
        self.mount_up()

    def pause_writers(self):
        self.pause.set()
        for ev in self.idle:
            if not ev.wait(300):
                raise Violation("a writer did not pause within 300 s")

    # -- quiesce and check --
    def quiesce_and_check(self):
        self.pause_writers()
        self.faults_off()
        self.mount_dead_check()
        try:
            self.mount.wait_synced(timeout=300)
            self.mount.wait_rounds(2)
            self.mount.wait_synced(timeout=300)
            # A file of cards stays a few seconds after its cards were taken
            # (delete_grace), and is no pending change.
            wait_until(lambda: not [f for f in self.files(self.mount.root)
                                    if f.name.startswith("import-")],
                       timeout=60, what="imported files of cards to go")
        except AssertionError as e:
            raise Violation("1: no convergence, writers paused and faults off: %s; log %s"
                            % (e, self.mount.log_path)) from None
        self.check_invariants()
        with self.model.lock:
            # Settled now: a contact whose move won over a delete elsewhere is
            # alive (the check saw it once, in its folder), and is no longer
            # deleted; one the delete won is.
            # The same for one a local edit brought back after a delete (the
            # check accepted it: it holds that edit).
            alive = {self.uid_of(c) for c in self.box()["contacts"]}
            for uid in set(self.model.deleted) & alive - self.model.uncertain:
                self.model.deleted.pop(uid, None)
                if self.model.remote.get(uid, ("",))[0] is None:
                    self.model.remote.pop(uid, None)
            self.model.moved.clear()
            self.model.racy_delete.clear()
        self.counts["quiesce points"] += 1
        self.pause.clear()

    def void_bare_writes(self):
        """Files in mount points no longer mounted were written after a kill,
        not through contactfs: their acknowledgements are void."""
        for n in range(1, self.mounts):
            bare = self.work / ("mnt%d" % n)
            for dirpath, _dirs, files in os.walk(bare):
                for f in files:
                    fp = Path(dirpath) / f
                    try:
                        data = fp.read_bytes()
                    except OSError:
                        continue
                    # Every card of it: a file of several cards too.
                    uids = re.findall(r"(?im)^(?:[A-Za-z0-9-]+\.)?UID(?:;[^:\r\n]*)?:([^\r\n]*)",
                                      unfold(data.decode("utf-8", "replace")))
                    with self.model.lock:
                        self.model.uncertain.update(uids)
                    self.note("void: written after a kill, not through the mount:", fp, *uids)
            shutil.rmtree(bare, ignore_errors=True)

    @staticmethod
    def made_from(have, note, read):
        """Whether the edit that left note have was made, through a chain of
        edits each made from what its writer read, from the edit note."""
        seen, n = set(), have
        while n in read and n not in seen and n != note:
            seen.add(n)
            n = read[n]
        return n == note

    def check_invariants(self):
        self.void_bare_writes()
        with self.model.lock:
            interrupted = set(self.model.interrupted)
        box = self.box()
        paths = folder_paths(box)
        errors = self.mount.errors()
        root = self.mount.root
        problems = []
        # 1. convergence
        server = {}
        uids = collections.Counter()
        for c in box["contacts"]:
            uid = self.uid_of(c)
            uids[uid] += 1
            server[uid] = (paths[c["parentFolderId"]], c)
        mount = {}
        conflicts = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            for f in filenames:
                fp = Path(dirpath) / f
                if ".conflict-" in f:
                    conflicts[os.path.join(rel, f)] = fp.read_bytes()
                    continue
                data = fp.read_bytes()
                if not f.endswith(".vcf") or f.startswith("."):
                    uid = (card_props(data).get("UID") or [""])[0]
                    if f not in errors and uid not in interrupted:
                        problems.append("1: scratch file %s left in the mount and not in "
                                        ".contactfs/errors" % os.path.join(rel, f))
                    continue
                if not data:
                    continue    # a file made and not written yet: a draft, nothing to send
                props = card_props(data)
                uid = (props.get("UID") or [""])[0]
                if uid in mount:
                    problems.append("1: UID %s shown twice: %s and %s"
                                    % (uid, mount[uid][0], os.path.join(rel, f)))
                mount[uid] = (os.path.join(rel, f), rel, props)
        for name in conflicts:
            if os.path.basename(name) not in errors:
                problems.append("1: conflict file %s not listed in .contactfs/errors" % name)
        mount_dirs = {os.path.relpath(d, root) for d in self.dirs(root)} - {"."}
        server_dirs = {p for p in paths.values() if p}
        if mount_dirs != server_dirs:
            problems.append("1: folders differ: mount only %s, server only %s"
                            % (sorted(mount_dirs - server_dirs), sorted(server_dirs - mount_dirs)))
        for uid, (folder, c) in sorted(server.items()):
            if uid not in mount:
                problems.append("1: server contact %s (%r in %r) has no file"
                                % (uid, c.get("displayName"), folder))
                continue
            name, rel, props = mount[uid]
            if rel != folder:
                problems.append("1: %s is in %r on the server, %r in the mount" % (uid, folder, name))
            note = "\n".join(unescape_text(v) for v in props.get("NOTE", []))
            if (c.get("personalNotes") or "").replace("\r\n", "\n") != note:
                problems.append("1: %s note differs: server %r, file %r"
                                % (name, c.get("personalNotes"), note))
        for uid, (name, _rel, _p) in sorted(mount.items()):
            if uid not in server and os.path.basename(name) not in errors:
                problems.append("1: file %s (UID %s) is not on the server" % (name, uid))
        # 3. duplicates, deleted alive
        for uid, n in sorted(uids.items()):
            if n > 1:
                problems.append("3: %d server contacts have UID %s (%s)" % (
                    n, uid, [(c["id"][-12:], c.get("displayName"), c["createdDateTime"],
                              paths[c["parentFolderId"]], c.get("personalNotes"))
                             for c in box["contacts"] if self.uid_of(c) == uid]))
        with self.model.lock:
            local = dict(self.model.local)
            remote = dict(self.model.remote)
            read = dict(self.model.read)
            deleted = dict(self.model.deleted)
            uncertain = set(self.model.uncertain)
            created = set(self.model.created)
            racy = set(self.model.racy_delete)
        for uid, t in sorted(deleted.items()):
            # Alive again is right when a local edit made it so: one acknowledged after
            # the delete, or one not yet sent when the delete came, whose update then
            # met a 404 and created the contact again with it (docs/cache.md,
            # "Answers"): the server then holds exactly that edit.
            if uid in server and uid not in uncertain and uid not in racy and \
                    not (uid in local and local[uid][2] > t) and \
                    not (uid in local and remote.get(uid, ("",))[0] is None and
                         (server[uid][1].get("personalNotes") or "") == local[uid][0]):
                problems.append("3: %s was deleted (acknowledged) but is on the server" % uid)
        # 2. no lost acknowledged edit
        conflict_text = b"\n".join(conflicts.values())
        for uid, (note, _t0, t1) in sorted(local.items()):
            if uid in uncertain:
                continue
            r = remote.get(uid)
            if uid not in server:
                if uid in deleted or (r and r[0] is None):
                    continue
                problems.append("2: acknowledged edit %s of %s lost: the contact is gone"
                                % (note, uid))
                continue
            have = server[uid][1].get("personalNotes") or ""
            if have == note:
                continue
            if note.encode() in conflict_text:
                continue        # lost a conflict that .contactfs/errors documents
            if self.made_from(have, note, read):
                continue        # superseded by an edit made from it (read, then written)
            problems.append("2: acknowledged edit %s of %s lost: server note %r%s"
                            % (note, uid, have, ", remote %r" % (r,) if r else ""))
        # 2. no lost remote edit: the last remote edit of a contact is on the
        # server, or in a conflict file, or a local edit whose writer had read
        # it (or read an edit made from it) replaced it.
        for uid, (rnote, _tr) in sorted(remote.items()):
            if rnote is None or uid in uncertain or uid not in server:
                continue
            have = server[uid][1].get("personalNotes") or ""
            if have == rnote or rnote.encode() in conflict_text:
                continue
            if self.made_from(have, rnote, read):
                continue        # superseded by an edit made from it
            problems.append("2: remote edit %s of %s lost: the server holds %r, made from %r "
                            "(a conflict the daemon settles keeps the server's version)"
                            % (rnote, uid, have, read.get(have)))
        for uid in sorted(created - uncertain):
            if uid not in server and uid not in deleted and uid not in remote:
                problems.append("2: created contact %s is not on the server" % uid)
        if problems:
            raise Violation("\n".join(problems))

    def check_requests(self, reqs, problems):
        self.writes += sum(n for r, n in reqs["by_route"].items()
                           if r.split(" ", 1)[0] in WRITE_METHODS and not r.endswith("/$batch"))
        if reqs["max_in_flight"] > 4:
            problems.append("5: %d requests in flight (at most 4)" % reqs["max_in_flight"])
        if reqs["early_retries"]:
            problems.append("5: %d requests inside a Retry-After window: %s"
                            % (reqs["early_retries"], reqs["early_details"]))

    def epoch_requests(self):
        """Check the counters since the last reset (no driver request among
        them: the counters are zeroed after each remote burst) and add them
        to the run's totals."""
        reqs = self.emu.requests()
        problems = []
        self.check_requests(reqs, problems)
        self.counts["requests"] += reqs["total"]
        self.emu.admin("POST", "requests/reset")
        if problems:
            raise Violation("\n".join(problems))

    # -- main loop --
    def run_soak(self):
        a = self.args
        self.emu = Emulator("--contacts", str(a.contacts), "--folders", "5", "--photos", "30",
                            "--gen-seed", str(a.seed))
        self.emu.__enter__()
        self.proxy = TcpProxy(self.emu.url).start()
        try:
            self.mount_up(synced=True)
            log("mounted: %d contacts" % len(self.files(self.mount.root)))
            self.emu.faults({"seed": a.seed})
            threads = [threading.Thread(target=self.writer, args=(i,), daemon=True)
                       for i in range(a.writers)]
            self.emu.admin("POST", "requests/reset")
            for t in threads:
                t.start()
            deadline = time.monotonic() + a.minutes * 60
            rng = self.rng
            while time.monotonic() < deadline:
                knobs = self.fault_epoch(rng)
                event = rng.choices(["none", "kill", "offline", "remount", "quiesce"],
                                    [4, 2, 1, 1, 2])[0]
                self.note("epoch", knobs, event)
                log("epoch: faults %s, then %s; %s" % (
                    {k: v for k, v in knobs.items() if v and k != "retry_after"}, event,
                    dict(self.counts)))
                time.sleep(rng.uniform(3, 12))
                self.mount_dead_check()
                if event == "kill":
                    self.kill_and_remount()
                elif event == "offline":
                    self.epoch_requests()
                    self.proxy.stop()
                    self.note("offline")
                    self.counts["offline periods"] += 1
                    time.sleep(rng.uniform(2, 8))
                    self.server_idle()
                    self.emu.admin("POST", "requests/reset")
                    self.proxy.start()
                    self.note("online")
                elif event == "remount":
                    self.pause_writers()
                    self.clean_remount()
                    self.pause.clear()
                if event == "quiesce":
                    self.quiesce_and_check()
                self.epoch_requests()
                self.faults_off()
                self.remote_burst(rng)
                self.emu.admin("POST", "requests/reset")
            self.quiesce_and_check()
            self.stop_all.set()
            for t in threads:
                t.join(60)
            self.epoch_requests()
            changes = self.model.counts["acked"] + self.counts["deletes"] + self.counts["moves"] \
                + self.counts["mkdir"] + self.counts["rmdir"] + self.counts["rename_dir"]
            if self.writes > WRITES_PER_CHANGE * max(changes, 1) + 50:
                raise Violation("5: %d write requests for %d acknowledged changes "
                                "(bound %d per change + 50)"
                                % (self.writes, changes, WRITES_PER_CHANGE))
            self.mount.stop(check=False)
            rc = self.mount.proc.returncode if self.mount.proc else 0
            self.sanitizer_check()
            log("done: %d acked, write requests %d for %d changes; %s"
                % (self.model.counts["acked"], self.writes, changes,
                   dict(sorted(self.counts.items()))))
            return rc
        finally:
            self.stop_all.set()
            if self.mount and self.mount.proc:
                self.mount.kill()
            if not self.proxy.stopping:
                self.proxy.stop()
            self.emu.__exit__(None, None, None)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--contacts", type=int, default=300)
    ap.add_argument("--asan", action="store_true",
                    help="the daemon is a sanitizer build (CONTACTFS_BIN): any report fails")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 2 ** 31)
    replay = "scripts/soak --seed %d --minutes %g --writers %d%s%s" % (
        a.seed, a.minutes, a.writers, "" if a.contacts == 300 else " --contacts %d" % a.contacts,
        " --asan" if a.asan else "")
    log("seed %d (replay: %s)" % (a.seed, replay))
    work = tempfile.mkdtemp(prefix="contactfs-soak-", dir="/var/tmp")
    ok = False
    try:
        s = Soak(a, work)
        s.run_soak()
        ok = True
    except Violation as v:
        log("VIOLATION:\n%s" % v)
    except Exception:  # noqa: BLE001
        log("FAILED:\n%s" % traceback.format_exc())
    if not ok:
        log("seed %d failed; work directory kept: %s\nreplay: %s" % (a.seed, work, replay))
        return 1
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    log("seed %d: 0 violations" % a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
