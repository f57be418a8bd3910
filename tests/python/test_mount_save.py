"""How real programs save: each one is run for real on the mount, against the
emulator, and every save pattern must end as an update of the same Graph
contact (docs/design.md §2, 3, 4, 8): the Graph id is
unchanged, no second contact appears, the edited value is on the server, the
other fields are still there, and the number of contacts is what it was.
Creates and deletes end as exactly one create or one delete.

Where a test's name says which pattern a program uses (rename away, write in
place, temp file + rename, unlink + create), the program runs under strace
and the test checks that it really did that, so a test cannot pass by
exercising a different path than it claims.
"""
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, folder_paths, mailbox, need_fuse, server_contacts, vcf_files, \
    wait_until


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


# ---- the mailbox ---------------------------------------------------------------

SEED = {"seed": 7, "mailboxes": {"me@contoso.example": {
    "contacts": [
        {"givenName": "Alice", "surname": "Archer", "displayName": "Alice Archer",
         "emailAddresses": [{"address": "alice@example.org", "name": "Alice Archer"}],
         "businessPhones": ["+1 555 0100"], "mobilePhone": "+1 555 0199",
         "companyName": "Acme", "jobTitle": "Engineer",
         "personalNotes": "original note"},
        {"givenName": "Bob", "surname": "Baker", "displayName": "Bob Baker",
         "emailAddresses": [{"address": "bob@example.org", "name": "Bob Baker"}],
         "personalNotes": "bob note"},
    ],
    "folders": [
        {"displayName": "Work", "contacts": [
            {"givenName": "Carol", "surname": "Cook", "displayName": "Carol Cook",
             "emailAddresses": [{"address": "carol@example.org", "name": "Carol Cook"}],
             "jobTitle": "Chef", "personalNotes": "carol note"}]},
        {"displayName": "Family", "contacts": []},
    ]}}}

ALICE = "Alice Archer.vcf"
OLD, NEW = "original note", "edited note"
# Fields of Alice that an edit of her note must leave as they are.
KEPT = ("displayName", "givenName", "surname", "emailAddresses", "businessPhones",
        "mobilePhone", "companyName", "jobTitle", "parentFolderId")

NEW_VCARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:6f1c3e0a-dora-dunn@example.org\r\n"
             "FN:Dora Dunn\r\nN:Dunn;Dora;;;\r\nEMAIL;TYPE=INTERNET:dora@example.org\r\n"
             "TEL;TYPE=CELL:+1 555 0400\r\nNOTE:dora note\r\nEND:VCARD\r\n")


@pytest.fixture
def seeded(tmp_path):
    """(emu, mount) over SEED, synced.

    The mount point is outside /tmp: vim ('backupskip') and emacs
    (normal-backup-enable-predicate) make no backups of files under /tmp, so
    a mount there would not see their default save patterns, which a mount
    in a home directory does."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    root = Path(tempfile.mkdtemp(prefix="contactfs-save-", dir="/var/tmp"))
    try:
        with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, root=root) as m:
            m.wait_synced()
            yield emu, m
    finally:
        try:
            root.rmdir()
        except OSError:
            pass


def by_id(emu):
    return {c["id"]: c for c in server_contacts(emu)}


def find(emu, display_name):
    return [c for c in server_contacts(emu) if c["displayName"] == display_name]


def the_one(emu, display_name):
    found = find(emu, display_name)
    assert len(found) == 1, "%d contacts named %r on the server: %s" % (
        len(found), display_name, [c["id"] for c in found])
    return found[0]


def deleted_contacts(emu):
    return mailbox(emu).get("deletedItems", {}).get("contacts", [])


def folder_id(emu, path):
    for fid, p in folder_paths(mailbox(emu)).items():
        if p == path:
            return fid
    raise AssertionError("no folder %r on the server" % path)


def contact_writes(emu):
    """Requests since the last reset that create or delete a contact, by route."""
    out = {}
    for route, n in emu.requests()["by_route"].items():
        method, _, path = route.partition(" ")
        if "/extensions" in path or "/photo" in path:
            continue
        creates = method == "POST" and path.endswith("/contacts")
        deletes = (method == "DELETE" and path.endswith("/contacts/{id}")) or \
            path.endswith("/contacts/{id}/permanentDelete")
        if creates or deletes:
            out[route] = n
    return out


def reset_requests(emu):
    emu.admin("POST", "requests/reset")


def uid_of(text):
    m = re.search(r"^UID:(.*?)\r?$", text, re.M)
    return m.group(1) if m else None


def assert_updated_in_place(emu, m, before, cid, *, rel=ALICE, note=NEW, kept=KEPT):
    """After a save of Alice's note: the same contact carries the new note,
    nothing else changed, no contact was created or deleted."""
    m.wait_synced()
    after = by_id(emu)
    assert set(after) == set(before), (
        "the set of Graph ids changed: created %s, gone %s\n%s"
        % (sorted(set(after) - set(before)), sorted(set(before) - set(after)), m.log_text()))
    c = after[cid]
    assert c["personalNotes"] == note, "the edit did not reach the server:\n%s" % m.log_text()
    for k in kept:
        assert c[k] == before[cid][k], "%s changed: %r -> %r" % (k, before[cid][k], c[k])
    for oid, o in before.items():
        if oid != cid:
            assert after[oid]["changeKey"] == o["changeKey"], "%s was changed too" % o["displayName"]
    assert deleted_contacts(emu) == [], "a contact went to Deleted Items"
    text = (m.root / rel).read_text()
    assert note in text and OLD not in text
    assert uid_of(text) == cid


# ---- running programs ----------------------------------------------------------

def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed" % name)
    return path


def strace_prefix(tmp_path):
    """(argv prefix, log path) to run a program under strace; ([], None)
    without strace."""
    if not shutil.which("strace"):
        return [], None
    n = 0
    while (tmp_path / ("strace%d.log" % n)).exists():
        n += 1
    log = tmp_path / ("strace%d.log" % n)
    return ["strace", "-f", "-s", "256", "-e", "trace=file,desc", "-o", str(log)], log


def run(argv, tmp_path, *, trace=True, input=None, cwd=None, env=None, timeout=120):
    """Run argv (under strace when there is one); fail unless it exits 0.
    Returns the strace log ("" without strace)."""
    env = dict(os.environ, **(env or {}))
    env.setdefault("HOME", str(tmp_path / "home"))
    Path(env["HOME"]).mkdir(exist_ok=True)
    log = None
    if trace:
        prefix, log = strace_prefix(tmp_path)
        argv = prefix + list(argv)
    p = subprocess.run(argv, input=input, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    assert p.returncode == 0, "%s exited %d\nstdout: %s\nstderr: %s" % (
        argv, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    return log.read_text(errors="replace") if log else ""


def traced(log):
    """Skip pattern checks when the program could not be traced."""
    return bool(log)


DIRFD = r"(?:(?:AT_FDCWD|\d+)(?:<[^>]*>)?, )?"


def renames(log):
    """(from, to) basenames of every successful rename in a strace log."""
    out = []
    for mm in re.finditer(r'rename(?:at2?)?\(%s"((?:[^"\\]|\\.)*)", %s"((?:[^"\\]|\\.)*)"'
                          r'[^)]*\) = 0' % (DIRFD, DIRFD), log):
        out.append((os.path.basename(mm.group(1)), os.path.basename(mm.group(2))))
    return out


def opened_with(log, name, flag):
    """Successful opens of a file whose basename is name with flag set."""
    pat = r'open(?:at)?\(%s"(?:[^"]*/)?%s", ([A-Z_|]+)[^)]*\) = \d+' % (DIRFD, re.escape(name))
    return [mm.group(1) for mm in re.finditer(pat, log) if flag in mm.group(1).split("|")]


def opened_for_writing(log, name):
    return opened_with(log, name, "O_WRONLY") + opened_with(log, name, "O_RDWR")


def unlinked(log, name):
    pat = r'unlink(?:at)?\(%s"(?:[^"]*/)?%s"(?:, 0)?\) = 0' % (DIRFD, re.escape(name))
    return re.search(pat, log) is not None


def pty_session(argv, steps, *, env, timeout=30):
    """Drive a full-screen program through a pseudo-terminal: for each
    (wait_for, keys) step, wait until wait_for (a regex; None: no wait) shows
    in the output since the previous step, then type keys. Returns the exit
    status and the whole output."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    import fcntl
    import struct
    import termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    mark = 0
    ansi = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")

    def read_some(deadline):
        nonlocal out
        r, _, _ = select.select([fd], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            out += chunk
        return True

    try:
        for wait_for, keys in steps:
            if wait_for is not None:
                deadline = time.monotonic() + timeout
                while not re.search(wait_for.encode(), ansi.sub(b"", out[mark:])):
                    if time.monotonic() > deadline or not read_some(deadline):
                        raise AssertionError("%s: never showed %r; screen:\n%s" % (
                            argv[0], wait_for, ansi.sub(b"", out).decode(errors="replace")))
                mark = len(out)
            os.write(fd, keys.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), ansi.sub(b"", out).decode(errors="replace")
            read_some(deadline)
        raise AssertionError("%s did not exit; screen:\n%s"
                             % (argv[0], ansi.sub(b"", out).decode(errors="replace")))
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


# ---- vim -----------------------------------------------------------------------

def vim_edit(tmp_path, path, *setup):
    """:%s the note and :wq in Ex mode; vim's status says whether both worked."""
    argv = [tool("vim"), *setup, "-i", "NONE", "-es"]
    for c in ("%s/" + OLD + "/" + NEW + "/", "wq"):
        argv += ["-c", c]
    return run(argv + [str(path)], tmp_path)


def test_vim_with_default_settings_saves_as_an_update_of_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    # -u DEFAULTS: vim's defaults.vim, nocompatible, so backupcopy=auto and a
    # swap file. On this mount auto probes with "4913" and then renames the
    # original to name.vcf~ (seen with strace); either choice must work.
    vim_edit(tmp_path, m.root / ALICE, "-u", "DEFAULTS")
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_vim_backupcopy_yes_writes_in_place_and_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    log = vim_edit(tmp_path, m.root / ALICE, "-N", "-u", "NONE", "-n", "-c", "set backupcopy=yes")
    if traced(log):
        assert opened_for_writing(log, ALICE), "vim did not write in place"
        assert not [r for r in renames(log) if ALICE in r], renames(log)
        assert opened_with(log, ALICE + "~", "O_CREAT"), "vim made no backup copy"
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_vim_backupcopy_no_renames_away_writes_anew_and_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    log = vim_edit(tmp_path, m.root / ALICE, "-N", "-u", "NONE", "-n", "-c", "set backupcopy=no")
    if traced(log):
        assert (ALICE, ALICE + "~") in renames(log), "vim did not rename the original away: %s" \
            % renames(log)
        assert opened_with(log, ALICE, "O_CREAT"), "vim did not write a new file"
        assert unlinked(log, ALICE + "~"), "vim did not delete its backup"
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


# ---- nano ----------------------------------------------------------------------

def test_nano_save_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    nano = tool("nano")
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, TERM="xterm", HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env.pop("NANO_RC", None)
    steps = [
        (OLD, "\x1c"),                   # the file is shown; ^\ replace
        ("Search.*[Rr]eplace", OLD + "\r"),
        ("Replace with", NEW + "\r"),
        ("this instance", "a"),          # Replace this instance? All
        ("Replaced 1 occurrence", "\x0f"),  # ^O write out
        ("File Name to Write", "\r"),
        ("Wrote \\d+ lines?", "\x18"),   # ^X exit
    ]
    prefix, log = strace_prefix(tmp_path)
    rc, screen = pty_session(prefix + [nano, str(m.root / ALICE)], steps, env=env)
    assert rc == 0, screen
    if log:
        log = log.read_text(errors="replace")
        # nano writes in place, O_TRUNC (keeping the CRLF "DOS format"), with a
        # lock file .name.vcf.swp beside it.
        assert opened_for_writing(log, ALICE), "nano did not write in place"
        assert not [r for r in renames(log) if ALICE in r], renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


# ---- emacs ---------------------------------------------------------------------

def test_emacs_batch_save_with_default_backup_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    # search-forward signals an error (exit status 255) when the note is not there.
    lisp = ('(progn (goto-char (point-min)) (search-forward "%s") (replace-match "%s")'
            ' (save-buffer))' % (OLD, NEW))
    log = run([tool("emacs"), "--batch", str(m.root / ALICE), "--eval", lisp], tmp_path)
    if traced(log):
        # Default: make-backup-files t, backup-by-copying nil: the first save
        # renames the original to name.vcf~ and writes a new name.vcf.
        assert (ALICE, ALICE + "~") in renames(log), renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]
    # The backup is a local scratch file with the old text, not a contact.
    assert OLD in (m.root / (ALICE + "~")).read_text()


# ---- sed, gio, cp --------------------------------------------------------------

def test_sed_in_place_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    log = run([tool("sed"), "-i", "s/%s/%s/" % (OLD, NEW), str(m.root / ALICE)], tmp_path)
    if traced(log):
        assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("sed")], renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_gio_save_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    edited = (m.root / ALICE).read_bytes().replace(OLD.encode(), NEW.encode())
    log = run([tool("gio"), "save", str(m.root / ALICE)], tmp_path, input=edited)
    if traced(log):
        assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith(".goutputstream-")], \
            renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_gio_copy_onto_an_existing_contact_updates_it(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    src = tmp_path / "src"
    src.mkdir()
    (src / ALICE).write_bytes((m.root / ALICE).read_bytes().replace(OLD.encode(), NEW.encode()))
    log = run([tool("gio"), "copy", str(src / ALICE), str(m.root / ALICE)], tmp_path)
    if traced(log):
        # Over an existing file GIO writes .goutputstream-XXXXXX and renames it.
        assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith(".goutputstream-")], \
            renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def assert_created_once(emu, m, before, rel, folder=""):
    """Dora (NEW_VCARD) is on the server once, in folder, with her fields;
    nothing else changed."""
    m.wait_synced()
    after = by_id(emu)
    assert set(before) <= set(after), "contacts went away: %s" % (set(before) - set(after))
    assert len(after) == len(before) + 1, "expected one new contact, got %d:\n%s" % (
        len(after) - len(before), m.log_text())
    dora = the_one(emu, "Dora Dunn")
    assert dora["parentFolderId"] == folder_id(emu, folder)
    assert [e["address"] for e in dora["emailAddresses"]] == ["dora@example.org"]
    assert dora["mobilePhone"] == "+1 555 0400"
    assert dora["personalNotes"] == "dora note"
    for oid, o in before.items():
        assert after[oid]["changeKey"] == o["changeKey"], "%s was changed" % o["displayName"]
    assert rel in vcf_files(m.root)
    text = (m.root / rel).read_text()
    assert "dora@example.org" in text
    # docs/design.md §2 and §5: the UID it was created with.
    assert uid_of(text) == "6f1c3e0a-dora-dunn@example.org"
    return dora


def test_gio_copy_of_a_new_vcard_to_a_new_name_creates_one_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    src = tmp_path / "src"
    src.mkdir()
    (src / "dora.vcf").write_text(NEW_VCARD, newline="")
    run([tool("gio"), "copy", str(src / "dora.vcf"), str(m.root / "Work" / "Dora Dunn.vcf")],
        tmp_path)
    assert_created_once(emu, m, before, "Work/Dora Dunn.vcf", "Work")


def test_a_copy_of_a_contact_in_its_own_folder_is_refused_and_makes_no_second_contact(
        seeded, tmp_path):
    """GNOME Files' copy and paste in the same folder (gio copy to "X
    (copy).vcf"): the copy carries the contact's UID, and a folder holds a
    contact once (docs/design.md §2). It is neither a second contact nor taken as an
    edit of the first: the copy fails with EEXIST at close, its bytes stay
    readable as a local draft, and .contactfs/errors names both files."""
    emu, m = seeded
    m.expect_errors.append(re.compile(r'vcf: carries the UID of "Alice Archer\.vcf"'))
    before = by_id(emu)
    alice = the_one(emu, "Alice Archer")
    reset_requests(emu)
    copy = m.root / "Alice Archer (copy).vcf"
    p = subprocess.run([tool("gio"), "copy", str(m.root / ALICE), str(copy)],
                       capture_output=True, env=dict(os.environ, HOME=str(tmp_path)))
    assert p.returncode != 0, "gio copy of a contact within its folder succeeded"
    assert copy.read_bytes() == (m.root / ALICE).read_bytes()
    errors = m.errors()
    assert "Alice Archer (copy).vcf" in errors and "Alice Archer.vcf" in errors, errors
    p = subprocess.run(["cp", str(m.root / ALICE), str(m.root / "Alice again.vcf")],
                       capture_output=True)
    assert p.returncode != 0 and b"File exists" in p.stderr, p
    m.wait_synced()
    after = by_id(emu)
    assert set(after) == set(before), "created %s:\n%s" % (set(after) - set(before), m.log_text())
    assert contact_writes(emu) == {}
    for k in KEPT + ("personalNotes",):
        assert after[alice["id"]][k] == alice[k], k
    assert deleted_contacts(emu) == []


def test_cp_over_an_existing_contact_updates_it(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    src = tmp_path / "src"
    src.mkdir()
    (src / ALICE).write_bytes((m.root / ALICE).read_bytes().replace(OLD.encode(), NEW.encode()))
    log = run(["cp", str(src / ALICE), str(m.root / ALICE)], tmp_path)
    if traced(log):
        assert opened_with(log, ALICE, "O_TRUNC"), "cp did not write in place"
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_cp_of_a_new_vcard_creates_one_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    src = tmp_path / "src"
    src.mkdir()
    (src / "dora.vcf").write_text(NEW_VCARD, newline="")
    reset_requests(emu)
    run(["cp", str(src / "dora.vcf"), str(m.root / "Dora Dunn.vcf")], tmp_path)
    dora = assert_created_once(emu, m, before, "Dora Dunn.vcf")
    writes = contact_writes(emu)
    assert sum(writes.values()) == 1 and not any(r.startswith("DELETE") for r in writes), writes
    assert dora["id"] not in before


# ---- mv ------------------------------------------------------------------------

def test_mv_within_a_folder_renames_the_file_only(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    alice = the_one(emu, "Alice Archer")
    reset_requests(emu)
    run(["mv", str(m.root / ALICE), str(m.root / "Alice (Acme).vcf")], tmp_path)
    m.wait_synced()
    after = by_id(emu)
    assert set(after) == set(before)
    assert contact_writes(emu) == {}
    for k in KEPT + ("personalNotes",):
        assert after[alice["id"]][k] == alice[k], k
    assert deleted_contacts(emu) == []
    assert vcf_files(m.root) == ["Alice (Acme).vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]
    assert uid_of((m.root / "Alice (Acme).vcf").read_text()) == alice["id"]


def test_mv_across_folders_moves_the_contact_once_keeping_its_uid(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    alice = the_one(emu, "Alice Archer")
    work = folder_id(emu, "Work")
    reset_requests(emu)
    run(["mv", str(m.root / ALICE), str(m.root / "Work" / ALICE)], tmp_path)
    m.wait_synced()
    after = by_id(emu)
    assert len(after) == len(before), "the number of contacts changed:\n%s" % m.log_text()
    assert alice["id"] not in after, "the source contact is still on the server"
    moved = the_one(emu, "Alice Archer")
    assert moved["parentFolderId"] == work
    for k in KEPT + ("personalNotes",):
        if k != "parentFolderId":
            assert moved[k] == alice[k], k
    assert [c["id"] for c in deleted_contacts(emu)] == [alice["id"]]
    # Graph cannot move: one create in Work, one delete of the source.
    writes = contact_writes(emu)
    assert sum(n for r, n in writes.items() if r.startswith("POST")) == 1, writes
    assert sum(n for r, n in writes.items() if not r.startswith("POST")) == 1, writes
    assert vcf_files(m.root) == ["Bob Baker.vcf", "Work/Alice Archer.vcf", "Work/Carol Cook.vcf"]
    assert uid_of((m.root / "Work" / ALICE).read_text()) == alice["id"]
    for oid, o in before.items():
        if oid != alice["id"]:
            assert after[oid]["changeKey"] == o["changeKey"], o["displayName"]


# ---- rsync, tar ----------------------------------------------------------------

def edited_copy(m, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(m.root / ALICE, src / ALICE)
    (src / ALICE).write_bytes((src / ALICE).read_bytes().replace(OLD.encode(), NEW.encode()))
    os.chmod(src / ALICE, 0o600)
    return src


def test_rsync_archive_temp_file_and_rename_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    src = edited_copy(m, tmp_path)
    log = run([tool("rsync"), "-a", str(src) + "/", str(m.root) + "/"], tmp_path)
    if traced(log):
        assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("." + ALICE + ".")], \
            renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_rsync_archive_inplace_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    src = edited_copy(m, tmp_path)
    log = run([tool("rsync"), "-a", "--inplace", str(src) + "/", str(m.root) + "/"], tmp_path)
    if traced(log):
        assert not [r for r in renames(log) if ALICE in r[1]], renames(log)
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_tar_extract_over_a_contact_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    src = edited_copy(m, tmp_path)
    archive = tmp_path / "backup.tar"
    run(["tar", "-cf", str(archive), "-C", str(src), ALICE], tmp_path, trace=False)
    log = run(["tar", "-xf", str(archive), "-C", str(m.root)], tmp_path)
    if traced(log):
        # GNU tar removes the existing file and creates a new one.
        assert unlinked(log, ALICE), "tar did not unlink the existing file"
        assert opened_with(log, ALICE, "O_CREAT")
    assert_updated_in_place(emu, m, before, cid)
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


# ---- khard ---------------------------------------------------------------------

def khard_config(m, tmp_path, editor_script=""):
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nset -e\n" + editor_script + "\n")
    editor.chmod(0o755)
    conf = tmp_path / "khard.conf"
    conf.write_text(
        "[addressbooks]\n[[mount]]\npath = %s\n"
        "[general]\ndebug = no\ndefault_action = list\neditor = %s\nmerge_editor = %s\n"
        "[contact table]\nshow_uids = yes\n"
        "[vcard]\npreferred_version = 3.0\nsearch_in_source_files = no\n"
        "skip_unparsable = no\n" % (m.root, editor, editor))
    return conf


def khard(conf, tmp_path, *args, input=None):
    return run([tool("khard"), "-c", str(conf), *args], tmp_path, input=input,
               env={"EDITOR": "false", "VISUAL": "false"})


def test_khard_new_creates_one_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    conf = khard_config(m, tmp_path)
    template = tmp_path / "dora.yaml"
    template.write_text(
        "Formatted name : Dora Dunn\nFirst name : Dora\nLast name : Dunn\n"
        "Phone :\n    cell : +1 555 0400\nEmail :\n    work : dora@example.org\n"
        "Note : dora note\n")
    reset_requests(emu)
    khard(conf, tmp_path, "new", "-a", "mount", "-i", str(template))
    m.wait_synced()
    after = by_id(emu)
    assert len(after) == len(before) + 1, m.log_text()
    dora = the_one(emu, "Dora Dunn")
    assert dora["parentFolderId"] == folder_id(emu, "")
    assert [e["address"] for e in dora["emailAddresses"]] == ["dora@example.org"]
    assert dora["mobilePhone"] == "+1 555 0400"
    assert dora["personalNotes"] == "dora note"
    writes = contact_writes(emu)
    assert sum(writes.values()) == 1, writes
    files = [f for f in vcf_files(m.root) if "dora@example.org" in (m.root / f).read_text()]
    assert len(files) == 1, files


def test_khard_edit_updates_the_same_contact(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    # khard hands the editor a YAML temp file; change the note in it.
    conf = khard_config(m, tmp_path, "grep -q '%s' \"$1\"\nsed -i 's/%s/%s/' \"$1\"" % (OLD, OLD, NEW))
    log = khard(conf, tmp_path, "edit", "-a", "mount", "Alice")
    if traced(log):
        # khard writes a temp file and renames it over the contact.
        assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("tmp")], renames(log)
    # khard rewrites EMAIL from its YAML and drops the X-CONTACTFS-NAME
    # parameter, so the email's display name is left to the next test; the
    # address itself must stay.
    assert_updated_in_place(emu, m, before, cid, kept=tuple(k for k in KEPT
                                                           if k != "emailAddresses"))
    after = by_id(emu)[cid]
    assert [e["address"] for e in after["emailAddresses"]] == ["alice@example.org"]
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Bob Baker.vcf", "Work/Carol Cook.vcf"]


def test_khard_edit_of_the_note_keeps_the_email_display_name_on_the_server(seeded, tmp_path):
    """khard's YAML has no place for an email's display name (Graph's
    emailAddresses[].name, X-CONTACTFS-NAME in the file) and writes EMAIL
    back without it; editing only the note must not rename Alice's email
    on the server (in Outlook) to its bare address."""
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    conf = khard_config(m, tmp_path, "sed -i 's/%s/%s/' \"$1\"" % (OLD, NEW))
    khard(conf, tmp_path, "edit", "-a", "mount", "Alice")
    assert_updated_in_place(emu, m, before, cid)


def test_khard_remove_force_deletes_the_contact_once(seeded, tmp_path):
    emu, m = seeded
    before = by_id(emu)
    bob = the_one(emu, "Bob Baker")
    conf = khard_config(m, tmp_path)
    reset_requests(emu)
    khard(conf, tmp_path, "remove", "-a", "mount", "--force", "Bob")
    m.wait_synced()
    wait_until(lambda: bob["id"] not in by_id(emu), timeout=60, what="Bob deleted on the server")
    m.wait_synced()
    after = by_id(emu)
    assert set(after) == set(before) - {bob["id"]}
    assert [c["id"] for c in deleted_contacts(emu)] == [bob["id"]]
    for oid, o in after.items():
        assert o["changeKey"] == before[oid]["changeKey"], o["displayName"]
    assert vcf_files(m.root) == ["Alice Archer.vcf", "Work/Carol Cook.vcf"]
