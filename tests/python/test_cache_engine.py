"""The sync engine (cache/) against the Graph emulator, driven through
cache-drive (tests/unit/cache_drive.c): local changes queued in the outbox
reach the server exactly once, whatever happens on the way.

 - crash: the draining process is killed with SIGKILL at random moments and
   started again; the mailbox ends as the changes intended, with no contact
   lost or made twice.
 - faults: 2,000 queued changes drain through 429s, 503s and dropped
   connections with at most 4 requests in flight and no retry before a
   Retry-After has passed; the mailbox ends as intended.
 - memory: a first sync of 100,000 contacts stays under 50 MB resident
   (about a minute and a half); one of 10,000 is timed.

After a drain the server holds exactly the intended contacts (by display
name, each once, with its folder, UID, email and note), the outbox is empty
and the replica shows exactly the intended folders and files: nothing
changed on the server meanwhile, so there is no conflict copy either.

The random choices come from a seed printed with every failure; set
CONTACTFS_ENGINE_SEED to replay one. cache-drive is looked for beside the
contactfs binary ($CONTACTFS_BIN), or at $CACHE_DRIVE_BIN.
"""
import collections
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, contactfs_bin
from emulator_proc import Emulator

ME = "me@contoso.example"
EXT_NAME = "org.contactfs.vcard"
# The folders the changes go to: the default one (""), a seeded folder, a
# seeded nested one, and (crash test) one the changes create.
SEEDED_FOLDERS = ("", "Work", "Work/Clients")
NEW_FOLDER = "Projects"


def cache_drive_bin():
    p = os.environ.get("CACHE_DRIVE_BIN")
    if not p:
        return contactfs_bin().parent / "cache-drive"
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def sanitized(binary):
    """Whether binary was built with AddressSanitizer (its memory figures
    then say nothing about ours)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def engine_seed():
    s = os.environ.get("CONTACTFS_ENGINE_SEED")
    return int(s) if s else 20261127


@pytest.fixture
def drive_bin():
    b = cache_drive_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(f"cache-drive not found at {b}: build it first "
                    "(cmake -S . -B build && make -C build cache-drive) or point "
                    "CACHE_DRIVE_BIN at it")
    return b


class Drive:
    """cache-drive on one cache directory, talking to one emulator."""

    def __init__(self, binary, emu, cache_dir, grace_ms=200, log=None):
        self.binary = binary
        self.emu = emu
        self.dir = cache_dir
        self.grace_ms = grace_ms
        self.log = log

    def argv(self, *cmd):
        return [str(self.binary), "--dir", str(self.dir), "--url", self.emu.url + "/v1.0",
                "--token", self.emu.token, "--grace", str(self.grace_ms), *map(str, cmd)]

    def run(self, *cmd, timeout=600):
        return subprocess.run(self.argv(*cmd), capture_output=True, text=True, timeout=timeout)

    def ok(self, *cmd, timeout=600):
        r = self.run(*cmd, timeout=timeout)
        assert r.returncode == 0, (f"cache-drive {' '.join(map(str, cmd))} exited "
                                   f"{r.returncode}: {r.stdout}{r.stderr}")
        return r.stdout

    def popen(self, *cmd):
        return subprocess.Popen(self.argv(*cmd), stdout=subprocess.DEVNULL, stderr=self.log)

    def status(self):
        r = self.run("status", timeout=60)
        fields = dict(line.split(" ", 1) for line in r.stdout.splitlines()
                      if line and not line.startswith("error "))
        return fields, r.stdout

    def paths(self):
        """Every node of the replica's tree (folders and files)."""
        return {line.split("\t")[0] for line in self.ok("ls", timeout=300).splitlines()}


# ---- what the mailbox must end as ---------------------------------------------------

def vcard(c):
    given, family = c["fn"].split(" ", 1)
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\n"
            f"UID:{c['uid']}\r\n"
            f"FN:{c['fn']}\r\n"
            f"N:{family};{given};;;\r\n"
            f"EMAIL:{c['email']}\r\n"
            f"NOTE:{c['note']}\r\n"
            "END:VCARD\r\n")


class Intended:
    """The contacts the mailbox must hold, by display name (each unique),
    as the changes leave them, and the display names deleted."""

    def __init__(self):
        self.live = {}    # fn -> {"fn", "folder", "uid", "email", "note"}
        self.gone = set()
        self.counts = collections.Counter()

    @staticmethod
    def path(c):
        return f"{c['folder']}/{c['fn']}.vcf" if c["folder"] else f"{c['fn']}.vcf"


class Script:
    """An apply file for cache-drive: one line a change, each vCard in a file
    of its own."""

    def __init__(self, dirpath):
        self.dir = Path(dirpath)
        self.dir.mkdir()
        self.lines = []

    def put(self, path, data):
        src = self.dir / f"{len(self.lines):05d}.vcf"
        src.write_text(data, encoding="utf-8", newline="")
        self.lines.append(f"put\t{path}\t{src}")

    def rm(self, path):
        self.lines.append(f"rm\t{path}")

    def mkdir(self, path):
        self.lines.append(f"mkdir\t{path}")

    def save(self):
        f = self.dir / "changes.txt"
        f.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
        return f


def seed_mailbox(emu, box, n, rng):
    """Load n contacts spread over SEEDED_FOLDERS into the emulator and into
    box (their UID is their Graph id: they carry no extension)."""
    buckets = {f: [] for f in SEEDED_FOLDERS}
    for i in range(n):
        folder = SEEDED_FOLDERS[rng.randrange(len(SEEDED_FOLDERS))]
        fn = f"Seeded Person{i:05d}"
        email = f"seeded{i:05d}@example.org"
        note = f"seeded {i}"
        buckets[folder].append({"givenName": "Seeded", "surname": f"Person{i:05d}",
                                "displayName": fn, "personalNotes": note,
                                "emailAddresses": [{"address": email, "name": fn}]})
        box.live[fn] = {"fn": fn, "folder": folder, "uid": None, "email": email, "note": note}
    doc = {"seed": 7, "mailboxes": {ME: {
        "contacts": buckets[""],
        "folders": [{"displayName": "Work", "contacts": buckets["Work"],
                     "childFolders": [{"displayName": "Clients",
                                       "contacts": buckets["Work/Clients"]}]}]}}}
    emu.admin("POST", "reset", doc)
    for c in emu.state()["mailboxes"][ME]["contacts"]:
        box.live[c["displayName"]]["uid"] = c["id"]


def plan_changes(rng, box, script, kinds, folders, tag):
    """Append one change per kind ("create", "update", "delete") to script,
    on contacts picked at random from those alive at that point, and keep
    box up to date."""
    made = 0
    for kind in kinds:
        if kind != "create" and not box.live:
            kind = "create"
        if kind == "create":
            made += 1
            c = {"fn": f"{tag.capitalize()} New{made:05d}",
                 "folder": folders[rng.randrange(len(folders))],
                 "uid": f"urn:uuid:{tag}-{made:05d}-{rng.getrandbits(64):016x}",
                 "email": f"{tag}.new{made:05d}@example.com", "note": f"{tag} created {made}"}
            box.live[c["fn"]] = c
            script.put(Intended.path(c), vcard(c))
        elif kind == "update":
            c = box.live[rng.choice(sorted(box.live))]
            k = len(script.lines)
            c["email"] = f"{tag}.changed{k:05d}@example.net"
            c["note"] = f"{tag} changed by change {k}"
            script.put(Intended.path(c), vcard(c))
        else:
            fn = rng.choice(sorted(box.live))
            c = box.live.pop(fn)
            box.gone.add(fn)
            script.rm(Intended.path(c))
        box.counts[kind] += 1


def folder_paths(mb):
    by_id = {f["id"]: f for f in mb["folders"]}

    def path(fid):
        f = by_id[fid]
        if f.get("isDefault") or fid == mb["defaultFolderId"]:
            return ""
        parent = path(f["parentFolderId"])
        return f"{parent}/{f['displayName']}" if parent else f["displayName"]

    return {fid: path(fid) for fid in by_id}


def server_uid(c):
    """The UID the server keeps for a contact: our extension's, else its id."""
    for x in c.get("extensions") or []:
        if x.get("extensionName") == EXT_NAME or x.get("id", "").endswith(EXT_NAME):
            if x.get("uid"):
                return x["uid"]
    return c["id"]


def differences(emu, box, folders):
    """How the server's mailbox differs from what box intends, one line
    each."""
    mb = emu.state()["mailboxes"][ME]
    paths = folder_paths(mb)
    out = []
    for path, n in collections.Counter(paths.values()).items():
        if n > 1:
            out.append(f"folder {path!r}: {n} copies on the server")
    for f in folders:
        if f not in paths.values():
            out.append(f"folder {f!r}: missing on the server")
    by_name = collections.defaultdict(list)
    for c in mb["contacts"]:
        by_name[c.get("displayName")].append(c)
    uids = collections.Counter(server_uid(c) for c in mb["contacts"])
    for uid, n in uids.items():
        if n > 1:
            out.append(f"UID {uid}: {n} contacts on the server")
    for fn, want in sorted(box.live.items()):
        got = by_name.get(fn, [])
        if len(got) != 1:
            out.append(f"{fn}: {len(got)} copies on the server, intended 1")
            continue
        c = got[0]
        have = {"folder": paths.get(c.get("parentFolderId")), "uid": server_uid(c),
                "email": [e.get("address") for e in c.get("emailAddresses") or []],
                "note": c.get("personalNotes")}
        wanted = {"folder": want["folder"], "uid": want["uid"], "email": [want["email"]],
                  "note": want["note"]}
        if have != wanted:
            out.append(f"{fn}: the server has {have}, intended {wanted}")
    for fn in sorted(set(by_name) - set(box.live), key=str):
        out.append(f"{fn}: {len(by_name[fn])} on the server, "
                   + ("deleted here" if fn in box.gone else "never made"))
    return out


def check_drained(drive, emu, box, folders, seed):
    """The server and the replica both hold exactly the intended contacts,
    and nothing is left in the outbox."""
    diff = differences(emu, box, folders)
    assert not diff, (f"seed {seed}: the server differs from the intended mailbox in "
                      f"{len(diff)} ways:\n" + "\n".join(diff[:40]))
    st, text = drive.status()
    assert st.get("pending") == "0" and st.get("parked") == "0", \
        f"seed {seed}: the outbox is not empty after the drain:\n{text}"
    # Nothing changed on the server meanwhile: no conflict copies, no
    # renamed duplicates, only the folders and the intended files.
    local = drive.paths()
    want = {f for f in folders if f} | {Intended.path(c) for c in box.live.values()}
    assert local == want, (f"seed {seed}: the replica's tree differs from the intended one: "
                           f"missing {sorted(want - local)[:20]}, "
                           f"extra {sorted(local - want)[:20]}\n{text[-3000:]}")


def first_sync(drive, n, timeout=600):
    out = drive.ok("sync", str(timeout), timeout=timeout + 60)
    fields = dict(line.split(" ", 1) for line in out.splitlines())
    assert int(fields["contacts"]) == n, out
    return fields


def log_tail(path, n=30):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# ---- crash ------------------------------------------------------------------------

def test_crash_killed_drain_loses_nothing_and_makes_nothing_twice(tmp_path, drive_bin):
    seed = engine_seed()
    rng = random.Random(seed)
    kill_rng = random.Random(seed + 1)
    print(f"seed {seed} (CONTACTFS_ENGINE_SEED)")
    box = Intended()
    with Emulator() as emu, open(tmp_path / "drain.log", "wb") as log:
        seed_mailbox(emu, box, 100, rng)
        drive = Drive(drive_bin, emu, tmp_path / "cache", grace_ms=200, log=log)
        first_sync(drive, 100)

        script = Script(tmp_path / "changes")
        script.mkdir(NEW_FOLDER)
        folders = SEEDED_FOLDERS + (NEW_FOLDER,)
        kinds = rng.choices(["create", "update", "delete"], weights=[40, 35, 25], k=499)
        plan_changes(rng, box, script, kinds, folders, "crash")
        out = drive.ok("apply", script.save(), timeout=300)
        assert out.strip() == f"applied {len(script.lines)}", out

        # 500 changes make about 230 requests (updates of a contact not yet
        # created ride with its create; a contact created and deleted here
        # never leaves), a dozen $batch requests of 20: at 150 ms a request
        # a batch takes about a second, so the 20 kills land while work is
        # left, most of them with a batch on the wire.
        emu.faults({"latency_ms": 150})
        emu.admin("POST", "requests/reset", {})
        kills, runs = 0, 0
        while kills < 20:
            p = drive.popen("drain", "300")
            runs += 1
            try:
                rc = p.wait(timeout=kill_rng.uniform(0.05, 1.5))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                kills += 1
                continue
            assert rc == 0, (f"seed {seed}: drain run {runs} exited {rc} by itself:\n"
                             + log_tail(tmp_path / "drain.log"))
            break
        t = time.monotonic()
        r = drive.run("drain", "300", timeout=400)
        wall = time.monotonic() - t
        emu.faults({"latency_ms": 0})
        stats = emu.requests()
        print(f"crash: {box.counts['create']} creates, {box.counts['update']} updates, "
              f"{box.counts['delete']} deletes, 1 mkdir; {kills} SIGKILLs in {runs} runs; "
              f"last drain {wall:.1f} s; {stats['total']} requests, "
              f"{stats['batch_items']} batch items; by route: "
              + json.dumps({k: v for k, v in stats["by_route"].items() if v}))
        assert r.returncode == 0, (f"seed {seed}: the last drain exited {r.returncode}: "
                                   f"{r.stderr}")
        assert kills == 20, (f"seed {seed}: the outbox drained after {kills} kills; the "
                             "test wants 20 kills while work is left (raise latency_ms)")
        check_drained(drive, emu, box, folders, seed)


# ---- faults -------------------------------------------------------------------------

def test_faults_2000_changes_drain_exactly_within_the_limits(tmp_path, drive_bin):
    seed = engine_seed()
    rng = random.Random(seed)
    print(f"seed {seed} (CONTACTFS_ENGINE_SEED)")
    box = Intended()
    with Emulator() as emu:
        seed_mailbox(emu, box, 1000, rng)
        drive = Drive(drive_bin, emu, tmp_path / "cache", grace_ms=200)
        first_sync(drive, 1000)

        script = Script(tmp_path / "changes")
        kinds = ["create"] * 1000 + ["update"] * 600 + ["delete"] * 400
        rng.shuffle(kinds)
        plan_changes(rng, box, script, kinds, SEEDED_FOLDERS, "fault")
        assert box.counts == {"create": 1000, "update": 600, "delete": 400}
        out = drive.ok("apply", script.save(), timeout=600)
        assert out.strip() == "applied 2000", out

        emu.admin("POST", "requests/reset", {})
        # Some latency, so that $batch items overlap and the limit of 4 in
        # flight is put to the test.
        emu.faults({"rate_429": 0.1, "rate_503": 0.05, "rate_drop": 0.02,
                    "retry_after": 0.2, "latency_ms": 20, "seed": seed})
        t = time.monotonic()
        r = drive.run("drain", "1200", timeout=1300)
        wall = time.monotonic() - t
        emu.faults({"rate_429": 0, "rate_503": 0, "rate_drop": 0, "latency_ms": 0})
        stats = emu.requests()
        print(f"faults: 2000 changes drained in {wall:.1f} s; {stats['total']} requests "
              f"({stats['batch_items']} batch items), {stats['throttled']} throttled (429), "
              f"{stats['by_status'].get('503', 0)} 503s, {stats['dropped']} dropped; "
              f"max in flight {stats['max_in_flight']}, early retries "
              f"{stats['early_retries']}")
        assert r.returncode == 0, f"seed {seed}: drain exited {r.returncode}: {r.stderr[-3000:]}"
        assert stats["max_in_flight"] <= 4, stats
        assert stats["early_retries"] == 0, stats["early_details"]
        assert stats["throttled"] > 0  # the faults really fired
        check_drained(drive, emu, box, SEEDED_FOLDERS, seed)


# ---- memory -------------------------------------------------------------------------

def timed_first_sync(tmp_path, drive_bin, contacts, folders):
    with Emulator("--contacts", str(contacts), "--folders", str(folders)) as emu:
        drive = Drive(drive_bin, emu, tmp_path / f"cache-{contacts}")
        t = time.monotonic()
        fields = first_sync(drive, contacts, timeout=3000)
        return time.monotonic() - t, fields


def test_memory_first_sync_of_10000_contacts_stays_under_50_mb_and_is_timed(tmp_path, drive_bin):
    # Under ASan the bound cannot be checked: skipped, as the 100,000 case,
    # rather than passing on the contact count alone. The sanitizer still
    # sees first syncs in the crash and fault tests above.
    if sanitized(drive_bin):
        pytest.skip("AddressSanitizer build: its shadow memory is not the engine's")
    wall, fields = timed_first_sync(tmp_path, drive_bin, 10000, 20)
    rss = int(fields["peak_rss_kb"])
    print(f"memory: first sync of 10,000 contacts: {wall:.1f} s, "
          f"{fields['requests']} requests, peak RSS {rss / 1024:.1f} MB")
    assert rss < 50 * 1024, f"peak RSS {rss} kB, over 50 MB: {fields}"


def test_memory_first_sync_of_100000_contacts_stays_under_50_mb(tmp_path, drive_bin):
    if sanitized(drive_bin):
        pytest.skip("AddressSanitizer build: its shadow memory is not the engine's")
    wall, fields = timed_first_sync(tmp_path, drive_bin, 100000, 40)
    rss = int(fields["peak_rss_kb"])
    print(f"memory: first sync of 100,000 contacts: {wall:.1f} s, {fields['requests']} "
          f"requests, peak RSS {rss / 1024:.1f} MB")
    assert rss < 50 * 1024, f"peak RSS {rss} kB, over 50 MB: {fields}"
