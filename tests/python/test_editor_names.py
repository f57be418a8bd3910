"""File names and saves (issue 15; docs/design.md §1-3).

The name a program saves to is the name it finds afterwards: a write, a
truncate or a rename-over through the mount never renames the file it wrote,
whatever it changed in the card (FN, N, ORG, an emptied FN). A display-name
change made on the server renames the file, but only once no one has it open
for writing. A .vcf written at a name the contact had earlier in its folder,
carrying its UID, is an update of that contact; a copy to a name the contact
never had is still refused.

The matrix below runs each program for real, twice over the same buffer: the
first save changes FN (and N), the second changes the note and keeps the first
save's FN, as an editor's buffer would. Between the two saves the test waits
until the first is on the server and the server's echo of it has been read back
by a sync round, which is when the file used to be renamed to the new FN (and the
second save then failed with EEXIST or became a local draft). Where a test's name
says how a program saves, the program runs under strace and the test checks
that it did so.
"""
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, need_fuse, vcf_files, wait_until
from test_mount_save import ALICE, NEW, OLD, SEED, by_id, deleted_contacts, khard_config, \
    opened_for_writing, opened_with, pty_session, renames, run, seeded, strace_prefix, \
    the_one, tool, uid_of, unlinked  # noqa: F401 (seeded is a fixture)
from test_mount_sync import graph, wait_quiet


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


# ---- the two edits -----------------------------------------------------------------

FIRST_FN = "Alicia Archer"     # what the first save makes of Alice's FN (and N)
SERVER_FN = "Alice Smith"      # a rename made on the server (and its surname)
SERVER_NAME = SERVER_FN + ".vcf"
GRACE_S = 4                    # more than the few seconds a server rename waits after close
EXPECTED_ERRORS = r'carries the UID of "Alice '


def fn_edit(data):
    """The first save's change: FN and N of Alice, nothing else."""
    out, n = re.subn(rb"(?m)^FN:Alice Archer(?=\r?$)", b"FN:" + FIRST_FN.encode(), data)
    out, k = re.subn(rb"(?m)^N:Archer;Alice;", b"N:Archer;Alicia;", out)
    assert n == 1 and k == 1, "Alice's card has no FN or N to edit:\n%r" % data
    return out


def note_edit(data):
    """The second save's change: the note."""
    assert data.count(OLD.encode()) == 1, "no note to edit:\n%r" % data
    return data.replace(OLD.encode(), NEW.encode())


def eexists(log):
    """strace lines where a close, or a call on a .vcf, failed with EEXIST.
    Not emacs's lock symlinks (".#name.vcf", EEXIST when it holds the lock
    already), mkdir, or an O_EXCL create: those expect EEXIST."""
    return [line for line in log.splitlines()
            if "EEXIST" in line and not re.search(r"\b(?:symlink|mkdir)(?:at)?\(|O_EXCL", line)
            and (".vcf" in line or re.search(r"\bclose\b", line))]


def last_errors(m):
    """The "last errors:" block of .contactfs/status."""
    text = (m.root / ".contactfs" / "status").read_text()
    return text.split("last errors:", 1)[1].strip() if "last errors:" in text else text


def settle(m, extra_s=GRACE_S):
    """Until nothing is pending and a sync round has finished extra_s after
    now: a server echo has been read back, and a rename waiting out its grace
    would have happened."""
    m.wait_synced()
    wait_quiet(m, time.time(), extra_s)


def traced_as(log, pattern):
    """True when there is a strace log to check that the program `pattern`;
    without strace the check is skipped, and a warning says so."""
    if log:
        return True
    warnings.warn(pytest.PytestWarning(
        "strace is not installed: not checked that the program %s" % pattern))
    return False


class Then(str):
    """Keys for pty_session (test_mount_save) that call action() just before
    they are typed: pty_session sends keys.encode(), so this is how a test
    does something between two steps of a session."""

    def __new__(cls, keys, action):
        s = super().__new__(cls, keys)
        s.action = action
        return s

    def encode(self, *args, **kw):
        action, self.action = self.action, None
        if action is not None:
            action()
        return str.encode(self, *args, **kw)


class TwoSaves:
    """One cell of the matrix: Alice's file as a program finds it, the two
    saves it makes, and what must hold afterwards."""

    def __init__(self, emu, m, tmp_path):
        self.emu, self.m, self.tmp = emu, m, tmp_path
        self.before = by_id(emu)
        self.cid = the_one(emu, "Alice Archer")["id"]
        self.files = vcf_files(m.root)
        self.buffer = (m.root / ALICE).read_bytes()       # what an editor reads
        self.first = fn_edit(self.buffer)                 # its buffer at the first save
        self.second = note_edit(self.first)               # ... and at the second
        self.listed_between = None
        self.logs = []

    def between(self, proc=None):
        """After the first save: until it is on the server and a sync round
        has read the server's version back (and a grace has passed)."""
        def landed():
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the program exited %d before its second save"
                                     % proc.returncode)
            c = by_id(self.emu).get(self.cid)
            return c is not None and c["displayName"] == FIRST_FN
        wait_until(landed, timeout=60, what="the first save (FN %s) on the server" % FIRST_FN)
        settle(self.m)
        self.listed_between = vcf_files(self.m.root)

    def said(self):
        return "\nafter the first save the mount listed: %s\ndaemon log:\n%s" % (
            self.listed_between, self.m.log_text()[-3000:])

    def run(self, argv, **kw):
        """test_mount_save.run, the strace log kept; a failure says what the
        mount listed after the first save."""
        try:
            log = run(argv, self.tmp, **kw)
        except AssertionError as e:
            raise AssertionError(str(e) + self.said()) from None
        self.logs.append(log)
        return log

    def run_paused(self, argv, flag, *, env=None, timeout=180):
        """Run a program that makes its first save, then waits until `flag`
        exists and makes its second: the test creates flag after between().
        Under strace when there is one; fails unless the program exits 0."""
        env = dict(os.environ, **(env or {}))
        env.setdefault("HOME", str(self.tmp / "home"))
        Path(env["HOME"]).mkdir(exist_ok=True)
        prefix, log = strace_prefix(self.tmp)
        out = self.tmp / ("out%d.txt" % len(self.logs))
        failed = None
        with open(out, "wb") as o:
            p = subprocess.Popen(prefix + list(argv), stdin=subprocess.DEVNULL, stdout=o,
                                 stderr=subprocess.STDOUT, env=env)
            try:
                try:
                    self.between(p)
                except AssertionError as e:
                    failed = e
                flag.touch()
                rc = p.wait(timeout=timeout)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        text = out.read_text(errors="replace")
        if failed is not None:
            raise AssertionError("%s\n%s said:\n%s%s" % (failed, argv[0], text, self.said()))
        assert rc == 0, "%s exited %d:\n%s%s" % (argv[0], rc, text, self.said())
        log = log.read_text(errors="replace") if log else ""
        self.logs.append(log)
        return log

    def check(self, name=ALICE, kept=("mobilePhone", "businessPhones", "companyName",
                                      "jobTitle", "parentFolderId")):
        """Both saves on the one contact, the file where the program put it."""
        emu, m, cid = self.emu, self.m, self.cid
        settle(m)
        after = by_id(emu)
        assert set(after) == set(self.before), (
            "the set of Graph ids changed: created %s, gone %s\n%s"
            % (sorted(set(after) - set(self.before)), sorted(set(self.before) - set(after)),
               m.log_text()))
        c = after[cid]
        assert (c["displayName"], c["givenName"], c["surname"]) == (FIRST_FN, "Alicia", "Archer"), \
            "the first save (FN, N) is not on the server: %r" % (
                (c["displayName"], c["givenName"], c["surname"]),)
        assert c["personalNotes"] == NEW, "the second save (NOTE) is not on the server: %r" \
            % c["personalNotes"]
        for k in kept:
            assert c[k] == self.before[cid][k], "%s changed: %r -> %r" % (
                k, self.before[cid][k], c[k])
        assert [e["address"] for e in c["emailAddresses"]] == ["alice@example.org"]
        for oid, o in self.before.items():
            if oid != cid:
                assert after[oid]["changeKey"] == o["changeKey"], "%s was changed" \
                    % o["displayName"]
        assert deleted_contacts(emu) == [], "a contact went to Deleted Items"
        files = vcf_files(m.root)
        assert files == self.files, (
            "the program saved to %r; afterwards the mount lists %s (before: %s)%s"
            % (name, files, self.files, self.said()))
        holders = [f for f in files if uid_of((m.root / f).read_text()) == cid]
        assert holders == [name], "files carrying Alice's UID: %s" % holders
        text = (m.root / name).read_text()
        assert "FN:" + FIRST_FN in text and "NOTE:" + NEW in text, text
        assert m.errors() == "", ".contactfs/errors:\n" + m.errors()
        assert last_errors(m) == "none", "status: " + last_errors(m)
        assert m.status().get("parked changes", "").startswith("0"), m.status()
        for log in self.logs:
            assert not eexists(log), "EEXIST seen by the program:\n" + "\n".join(eexists(log))


@pytest.fixture
def cell(seeded, tmp_path):
    emu, m = seeded
    return TwoSaves(emu, m, tmp_path)


def edited_source(tmp_path, data, name=ALICE):
    """A file outside the mount holding data (cp, rsync, tar read it)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    os.chmod(src / name, 0o600)
    return src / name


# ---- vim -------------------------------------------------------------------------------

def vim_two_saves(c, *setup):
    """vim in Ex mode: FN and N, :w, wait for the flag file, the note, :wq.
    A pattern that does not match makes vim exit non-zero."""
    flag = c.tmp / "second-save"
    argv = [tool("vim"), *setup, "-i", "NONE", "-es",
            "-c", "%s/^FN:Alice Archer/FN:" + FIRST_FN + "/"
                  " | %s/^N:Archer;Alice;/N:Archer;Alicia;/",
            "-c", "w",
            "-c", "while !filereadable('%s') | sleep 100m | endwhile" % flag,
            "-c", "%s/" + OLD + "/" + NEW + "/",
            "-c", "wq",
            str(c.m.root / ALICE)]
    return c.run_paused(argv, flag)


def test_vim_default_saves_twice_under_the_name_it_opened_as_updates_of_one_contact(cell):
    # -u DEFAULTS: backupcopy=auto, which on this mount probes with "4913"
    # and then renames the original away (name.vcf~) for each write.
    log = vim_two_saves(cell, "-u", "DEFAULTS")
    if traced_as(log, "renamed the file away and wrote it anew, twice"):
        assert renames(log).count((ALICE, ALICE + "~")) == 2, renames(log)
        assert len(opened_with(log, ALICE, "O_CREAT")) >= 2, "vim did not write a new file twice"
    cell.check()


def test_vim_backupcopy_yes_writes_in_place_twice_and_keeps_the_name(cell):
    log = vim_two_saves(cell, "-N", "-u", "NONE", "-n", "-c", "set backupcopy=yes")
    if traced_as(log, "wrote in place, twice"):
        assert len(opened_for_writing(log, ALICE)) >= 2, "vim did not write in place twice"
        assert not [r for r in renames(log) if ALICE in r], renames(log)
    cell.check()


def test_vim_backupcopy_no_renames_away_and_writes_anew_twice_and_keeps_the_name(cell):
    log = vim_two_saves(cell, "-N", "-u", "NONE", "-n", "-c", "set backupcopy=no")
    if traced_as(log, "renamed the file away and wrote it anew, twice"):
        assert renames(log).count((ALICE, ALICE + "~")) == 2, renames(log)
        assert len(opened_with(log, ALICE, "O_CREAT")) >= 2, "vim did not write anew twice"
        assert unlinked(log, ALICE + "~"), "vim did not delete its backup"
    cell.check()


# ---- nano ------------------------------------------------------------------------------

def nano_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, TERM="xterm", HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env.pop("NANO_RC", None)
    return env


def test_nano_writes_out_twice_in_one_session_under_the_name_it_opened(cell, tmp_path):
    nano = tool("nano")
    c = cell
    # ^\ replace (three times), ^O write out (twice), ^X exit; between the
    # two write-outs the test waits for the server's echo of the first.
    steps = [
        ("NOTE:" + OLD, "\x1c"),
        ("Search.*[Rr]eplace", "FN:Alice Archer\r"),
        ("Replace with", "FN:" + FIRST_FN + "\r"),
        ("this instance", "a"),
        ("Replaced 1 occurrence", "\x1c"),
        ("Search.*[Rr]eplace", "N:Archer;Alice;\r"),
        ("Replace with", "N:Archer;Alicia;\r"),
        ("this instance", "a"),
        ("Replaced 1 occurrence", "\x0f"),
        ("File Name to Write", "\r"),
        ("Wrote \\d+ lines?", Then("\x1c", c.between)),
        ("Search.*[Rr]eplace", OLD + "\r"),
        ("Replace with", NEW + "\r"),
        ("this instance", "a"),
        ("Replaced 1 occurrence", "\x0f"),
        ("File Name to Write", "\r"),
        ("Wrote \\d+ lines?", "\x18"),
    ]
    prefix, log = strace_prefix(tmp_path)
    try:
        rc, screen = pty_session(prefix + [nano, str(c.m.root / ALICE)], steps,
                                 env=nano_env(tmp_path))
    except AssertionError as e:
        raise AssertionError(str(e) + c.said()) from None
    assert rc == 0, screen
    log = log.read_text(errors="replace") if log else ""
    c.logs.append(log)
    if traced_as(log, "wrote in place, twice"):
        # nano writes in place (O_WRONLY|O_CREAT|O_TRUNC), twice.
        assert len(opened_for_writing(log, ALICE)) >= 2, "nano did not write in place twice"
        assert not [r for r in renames(log) if ALICE in r], renames(log)
    c.check()


# ---- emacs -----------------------------------------------------------------------------

def test_emacs_batch_saves_twice_in_one_run_under_the_name_it_visited(cell):
    c = cell
    flag = c.tmp / "second-save"
    # re-search-forward and search-forward signal an error (exit status 255)
    # when the text is not there.
    lisp = ('(progn'
            ' (goto-char (point-min)) (re-search-forward "^FN:Alice Archer")'
            ' (replace-match "FN:%s")'
            ' (goto-char (point-min)) (re-search-forward "^N:Archer;Alice;")'
            ' (replace-match "N:Archer;Alicia;")'
            ' (save-buffer)'
            ' (while (not (file-exists-p "%s")) (sleep-for 0.1))'
            ' (goto-char (point-min)) (search-forward "%s") (replace-match "%s")'
            ' (save-buffer))' % (FIRST_FN, flag, OLD, NEW))
    log = c.run_paused([tool("emacs"), "--batch", str(c.m.root / ALICE), "--eval", lisp], flag)
    if traced_as(log, "renamed the file away, wrote it anew, then wrote it in place"):
        # Default: make-backup-files t, backup-by-copying nil: the first save
        # renames the original to name.vcf~ and writes a new name.vcf; the
        # second writes name.vcf in place.
        assert (ALICE, ALICE + "~") in renames(log), renames(log)
        assert len(opened_for_writing(log, ALICE)) >= 2, "emacs did not write twice"
    c.check()


# ---- sed, gio, Python, cp ---------------------------------------------------------------

def test_sed_in_place_twice_keeps_the_name_and_updates_one_contact(cell):
    c = cell
    path = str(c.m.root / ALICE)
    sed = tool("sed")
    log1 = c.run([sed, "-i", "s/^FN:Alice Archer/FN:%s/; s/^N:Archer;Alice;/N:Archer;Alicia;/"
                  % FIRST_FN, path])
    c.between()
    log2 = c.run([sed, "-i", "s/%s/%s/" % (OLD, NEW), path])
    for log in (log1, log2):
        if traced_as(log, "renamed its temp file over the contact's file"):
            assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("sed")], \
                renames(log)
    c.check()


def test_gio_save_twice_keeps_the_name_and_updates_one_contact(cell):
    c = cell
    gio = tool("gio")
    log1 = c.run([gio, "save", str(c.m.root / ALICE)], input=c.first)
    c.between()
    log2 = c.run([gio, "save", str(c.m.root / ALICE)], input=c.second)
    for log in (log1, log2):
        if traced_as(log, "renamed .goutputstream-* over the contact's file"):
            assert [r for r in renames(log)
                    if r[1] == ALICE and r[0].startswith(".goutputstream-")], renames(log)
    c.check()


PY_WRITE = "import sys\nwith open(sys.argv[1], 'w', newline='') as f:\n    f.write(sys.argv[2])\n"


def test_python_open_w_twice_keeps_the_name_and_updates_one_contact(cell):
    c = cell
    path = str(c.m.root / ALICE)
    log1 = c.run([sys.executable, "-c", PY_WRITE, path, c.first.decode()])
    c.between()
    log2 = c.run([sys.executable, "-c", PY_WRITE, path, c.second.decode()])
    for log in (log1, log2):
        if traced_as(log, "wrote in place with O_TRUNC"):
            assert [f for f in opened_for_writing(log, ALICE) if "O_TRUNC" in f], \
                "python did not open the file with O_TRUNC"
            assert not [r for r in renames(log) if ALICE in r], renames(log)
    c.check()


def test_cp_over_twice_keeps_the_name_and_updates_one_contact(cell, tmp_path):
    c = cell
    src = edited_source(tmp_path, c.first)
    log1 = c.run(["cp", str(src), str(c.m.root / ALICE)])
    c.between()
    src = edited_source(tmp_path, c.second)
    log2 = c.run(["cp", str(src), str(c.m.root / ALICE)])
    for log in (log1, log2):
        if traced_as(log, "wrote in place with O_TRUNC"):
            assert opened_with(log, ALICE, "O_TRUNC"), "cp did not write in place"
    c.check()


# ---- rsync, tar ------------------------------------------------------------------------

def test_rsync_inplace_twice_keeps_the_name_and_updates_one_contact(cell, tmp_path):
    c = cell
    rsync = tool("rsync")
    src = edited_source(tmp_path, c.first)
    log1 = c.run([rsync, "-a", "--inplace", str(src), str(c.m.root) + "/"])
    c.between()
    src = edited_source(tmp_path, c.second)
    os.utime(src, (time.time() + 60, time.time() + 60))   # newer than the first copy
    log2 = c.run([rsync, "-a", "--inplace", str(src), str(c.m.root) + "/"])
    for log in (log1, log2):
        if traced_as(log, "wrote in place"):
            assert opened_for_writing(log, ALICE), "rsync --inplace did not write the file"
            assert not [r for r in renames(log) if ALICE in r[1]], renames(log)
    c.check()


def test_rsync_temp_file_and_rename_twice_keeps_the_name_and_updates_one_contact(cell, tmp_path):
    c = cell
    rsync = tool("rsync")
    src = edited_source(tmp_path, c.first)
    log1 = c.run([rsync, "-a", str(src), str(c.m.root) + "/"])
    c.between()
    src = edited_source(tmp_path, c.second)
    os.utime(src, (time.time() + 60, time.time() + 60))
    log2 = c.run([rsync, "-a", str(src), str(c.m.root) + "/"])
    for log in (log1, log2):
        if traced_as(log, "renamed its temp file over the contact's file"):
            assert [r for r in renames(log)
                    if r[1] == ALICE and r[0].startswith("." + ALICE + ".")], renames(log)
    c.check()


def test_tar_extract_twice_keeps_the_name_and_updates_one_contact(cell, tmp_path):
    c = cell
    logs = []
    for i, data in enumerate((c.first, c.second)):
        if i:
            c.between()
        src = edited_source(tmp_path, data)
        archive = tmp_path / ("backup%d.tar" % i)
        run(["tar", "-cf", str(archive), "-C", str(src.parent), ALICE], tmp_path, trace=False)
        logs.append(c.run(["tar", "-xf", str(archive), "-C", str(c.m.root)]))
    for log in logs:
        if traced_as(log, "unlinked the file and created it anew"):
            # GNU tar removes the existing file and creates a new one.
            assert unlinked(log, ALICE), "tar did not unlink the existing file"
            assert opened_with(log, ALICE, "O_CREAT")
    c.check()


# ---- khard, vdirsyncer -----------------------------------------------------------------

def test_khard_edit_twice_keeps_the_name_and_updates_one_contact(cell, tmp_path):
    c = cell
    khard = tool("khard")
    env = {"EDITOR": "false", "VISUAL": "false"}
    # khard hands the editor a YAML file; the scripted editor changes it.
    conf = khard_config(c.m, tmp_path,
                        "grep -q '^Formatted name: Alice Archer$' \"$1\"\n"
                        "sed -i 's/^Formatted name: Alice Archer$/Formatted name: %s/; "
                        "s/^First name: Alice$/First name: Alicia/' \"$1\"" % FIRST_FN)
    log1 = c.run([khard, "-c", str(conf), "edit", "-a", "mount", "Alice Archer"], env=env)
    c.between()
    conf = khard_config(c.m, tmp_path, "grep -q '%s' \"$1\"\nsed -i 's/%s/%s/' \"$1\""
                        % (OLD, OLD, NEW))
    log2 = c.run([khard, "-c", str(conf), "edit", "-a", "mount", "Alicia"], env=env)
    for log in (log1, log2):
        if traced_as(log, "renamed its temp file over the contact's file"):
            # khard writes a temp file and renames it over the contact's file.
            assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("tmp")], \
                renames(log)
    c.check()


def vdirsyncer_config(tmp_path, root, local):
    """A pair of two filesystem storages: `local` (a) and the mount's root
    folder (b), "a wins" so that it runs unattended."""
    conf = tmp_path / "vdirsyncer.conf"
    conf.write_text(
        '[general]\nstatus_path = "%s/"\n\n'
        '[pair contacts]\na = "local"\nb = "mount"\ncollections = null\n'
        'conflict_resolution = "a wins"\n\n'
        '[storage local]\ntype = "filesystem"\npath = "%s/"\nfileext = ".vcf"\n\n'
        '[storage mount]\ntype = "filesystem"\npath = "%s/"\nfileext = ".vcf"\n'
        % (tmp_path / "vdirsyncer-status", local, root))
    return conf


def vdirsyncer(conf, tmp_path, *args, trace=True):
    """Run vdirsyncer; (its output, the strace log)."""
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    Path(env["HOME"]).mkdir(exist_ok=True)
    prefix, log = strace_prefix(tmp_path) if trace else ([], None)
    p = subprocess.run(prefix + [tool("vdirsyncer"), "-c", str(conf), *args], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=180)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, "vdirsyncer %s exited %d:\n%s" % (" ".join(args), p.returncode, out)
    return out, (log.read_text(errors="replace") if log else "")


def copies(out):
    """vdirsyncer's lines saying it copied or deleted an item."""
    return [line for line in out.splitlines() if "Copying" in line or "Deleting" in line]


def local_card(local, uid):
    found = [f for f in local.iterdir() if f.suffix == ".vcf" and uid_of(f.read_text()) == uid]
    assert len(found) == 1, "%d local files carry the UID %s" % (len(found), uid)
    return found[0]


def test_vdirsyncer_updates_twice_under_the_name_it_found(cell, tmp_path):
    c = cell
    local = tmp_path / "local"
    local.mkdir()
    conf = vdirsyncer_config(tmp_path, c.m.root, local)
    vdirsyncer(conf, tmp_path, "discover", trace=False)
    out, _ = vdirsyncer(conf, tmp_path, "sync", trace=False)
    mine = local_card(local, c.cid)
    assert mine.read_bytes().count(b"FN:Alice Archer") == 1, mine.read_bytes()
    mine.write_bytes(fn_edit(mine.read_bytes()))
    out1, log1 = vdirsyncer(conf, tmp_path, "sync")
    c.logs.append(log1)
    assert [x for x in copies(out1) if "updating" in x and "to mount" in x], out1
    c.between()
    mine.write_bytes(note_edit(mine.read_bytes()))
    try:
        out2, log2 = vdirsyncer(conf, tmp_path, "sync")
    except AssertionError as e:
        raise AssertionError(str(e) + c.said()) from None
    c.logs.append(log2)
    assert [x for x in copies(out2) if "updating" in x and "to mount" in x], out2
    for log in (log1, log2):
        if traced_as(log, "renamed its temp file over the contact's file"):
            # The update path: a temp file renamed over the item's file.
            assert [r for r in renames(log) if r[1] == ALICE and r[0].startswith("tmp")], \
                renames(log)
    c.check()


def test_vdirsyncer_syncing_both_ways_over_rounds_of_name_changes_settles_each_time(
        seeded, tmp_path):
    """Three rounds: FN changed on the local side (Alice) and through the
    mount (Bob), one sync, the mount settles, and one more sync copies
    nothing; every contact is once on each side with the same UIDs."""
    emu, m = seeded
    before = by_id(emu)
    alice = the_one(emu, "Alice Archer")["id"]
    bob = the_one(emu, "Bob Baker")["id"]
    root_files = [f for f in vcf_files(m.root) if "/" not in f]
    local = tmp_path / "local"
    local.mkdir()
    conf = vdirsyncer_config(tmp_path, m.root, local)
    vdirsyncer(conf, tmp_path, "discover", trace=False)
    vdirsyncer(conf, tmp_path, "sync", trace=False)

    def sides():
        mount = {}
        for f in vcf_files(m.root):
            if "/" not in f:
                mount.setdefault(uid_of((m.root / f).read_text()), []).append(f)
        here = {}
        for f in sorted(local.iterdir()):
            if f.suffix == ".vcf":
                here.setdefault(uid_of(f.read_text()), []).append(f.name)
        return mount, here

    a_fn, b_fn = "Alice Archer", "Bob Baker"
    for rnd in range(1, 4):
        mine = local_card(local, alice)
        data = mine.read_bytes()
        new_a = "Alice Round%d" % rnd
        data2, n = re.subn(rb"(?m)^FN:" + re.escape(a_fn.encode()) + rb"(?=\r?$)",
                           b"FN:" + new_a.encode(), data)
        assert n == 1, data
        mine.write_bytes(data2)
        bob_file = [f for f in root_files if uid_of((m.root / f).read_text()) == bob]
        assert len(bob_file) == 1, (root_files, vcf_files(m.root))
        bpath = m.root / bob_file[0]
        data = bpath.read_bytes()
        new_b = "Bob Round%d" % rnd
        data2, n = re.subn(rb"(?m)^FN:" + re.escape(b_fn.encode()) + rb"(?=\r?$)",
                           b"FN:" + new_b.encode(), data)
        assert n == 1, data
        with open(bpath, "wb") as f:
            f.write(data2)
        out, _ = vdirsyncer(conf, tmp_path, "sync", trace=False)
        assert len(copies(out)) == 2, "round %d: expected one copy each way:\n%s" % (rnd, out)
        wait_until(lambda: m.errors() or (by_id(emu)[alice]["displayName"] == new_a
                                          and by_id(emu)[bob]["displayName"] == new_b),
                   timeout=60, what="round %d's names on the server" % rnd)
        settle(m)
        assert m.errors() == "", "round %d: .contactfs/errors:\n%s" % (rnd, m.errors())
        names = (by_id(emu)[alice]["displayName"], by_id(emu)[bob]["displayName"])
        assert names == (new_a, new_b), "round %d: the server has %s" % (rnd, names)
        out, _ = vdirsyncer(conf, tmp_path, "sync", trace=False)
        assert copies(out) == [], (
            "round %d: a second sync copied again (the mount changed what was synced):\n%s\n"
            "mount: %s" % (rnd, out, vcf_files(m.root)))
        mount, here = sides()
        assert set(mount) == set(here), (mount, here)
        assert all(len(v) == 1 for v in mount.values()), mount
        assert all(len(v) == 1 for v in here.values()), here
        now = [f for f in vcf_files(m.root) if "/" not in f]
        assert now == root_files, "round %d: the mount's file names changed: %s -> %s" % (
            rnd, root_files, now)
        a_fn, b_fn = new_a, new_b
    assert set(by_id(emu)) == set(before)
    assert deleted_contacts(emu) == []
    assert m.errors() == "", m.errors()


# ---- a rename on the server ------------------------------------------------------------

def rename_on_server(emu, cid):
    graph(emu, "PATCH", "/contacts/" + cid, {"surname": "Smith", "displayName": SERVER_FN})


def followed(m, name, old):
    files = vcf_files(m.root)
    return name in files and old not in files


def test_a_server_rename_waits_while_a_writer_holds_the_file_then_follows_after_close(seeded):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    files = vcf_files(m.root)
    path = m.root / ALICE
    text = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        rename_on_server(emu, cid)
        # Several sync rounds read the rename; the name stays while open.
        for _ in range(3):
            m.wait_synced()
            wait_quiet(m, time.time(), 0)
            assert vcf_files(m.root) == files, (
                "renamed while a writer holds it open: %s\n%s" % (vcf_files(m.root),
                                                                    m.log_text()[-3000:]))
        # The writer saves: the card as the server now names it, its note edited.
        data = text.replace(b"FN:Alice Archer", b"FN:" + SERVER_FN.encode()) \
            .replace(b"N:Archer;Alice;", b"N:Smith;Alice;")
        data = note_edit(data)
        os.ftruncate(fd, 0)
        assert os.pwrite(fd, data, 0) == len(data)
        os.fsync(fd)
        c = by_id(emu)[cid]
        assert c["personalNotes"] == NEW, "the writer's save is not on the server"
        assert set(by_id(emu)) == set(before)
        assert vcf_files(m.root) == files, "renamed by the writer's own save"
    finally:
        os.close(fd)
    want = sorted(SERVER_NAME if f == ALICE else f for f in files)
    wait_until(lambda: vcf_files(m.root) == want, timeout=20,
               what="the file to follow the server's name after close")
    assert uid_of((m.root / SERVER_NAME).read_text()) == cid
    m.wait_synced()
    after = by_id(emu)
    assert set(after) == set(before)
    assert (after[cid]["displayName"], after[cid]["personalNotes"]) == (SERVER_FN, NEW)
    assert deleted_contacts(emu) == []
    assert m.errors() == "", m.errors()


def test_nano_saving_under_the_old_name_after_a_server_rename_updates_the_same_contact(
        seeded, tmp_path):
    """nano reads the file and holds no descriptor while editing; a rename
    on the server meanwhile renames the file; nano's ^O writes the old name,
    which is a former name of the contact: an update of it."""
    emu, m = seeded
    nano = tool("nano")
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    files = vcf_files(m.root)
    seen = {}

    def server_rename():
        rename_on_server(emu, cid)
        wait_until(lambda: followed(m, SERVER_NAME, ALICE), timeout=30,
                   what="the file to follow the server's rename while nano edits")
        seen["listed"] = vcf_files(m.root)

    steps = [
        ("NOTE:" + OLD, Then("\x1c", server_rename)),
        ("Search.*[Rr]eplace", OLD + "\r"),
        ("Replace with", NEW + "\r"),
        ("this instance", "a"),
        ("Replaced 1 occurrence", "\x0f"),
        ("File Name to Write", "\r"),
        ("Wrote \\d+ lines?", "\x18"),
    ]
    prefix, log = strace_prefix(tmp_path)
    try:
        rc, screen = pty_session(prefix + [nano, str(m.root / ALICE)], steps,
                                 env=nano_env(tmp_path))
    except AssertionError as e:
        raise AssertionError("%s\nafter the rename on the server the mount listed: %s\n%s" % (
            e, seen.get("listed"), m.log_text()[-3000:])) from None
    assert rc == 0, screen
    log = log.read_text(errors="replace") if log else ""
    if traced_as(log, "wrote the old name in place"):
        assert opened_for_writing(log, ALICE), "nano did not write the old name"
        assert not eexists(log), eexists(log)
    settle(m)
    after = by_id(emu)
    assert set(after) == set(before), "created %s, gone %s" % (
        set(after) - set(before), set(before) - set(after))
    assert after[cid]["personalNotes"] == NEW, "nano's save is not on the server"
    assert deleted_contacts(emu) == []
    assert vcf_files(m.root) == files, "after nano's save at %r the mount lists %s" % (
        ALICE, vcf_files(m.root))
    assert uid_of((m.root / ALICE).read_text()) == cid
    assert m.errors() == "", m.errors()


def test_a_server_rename_after_an_editor_saved_the_file_still_renames_it(cell):
    """A save through the mount keeps the name the program chose against
    the echo of its own change, not against a later rename made on the
    server: that one renames the file once no one has it open."""
    c = cell
    c.run([tool("sed"), "-i", "s/%s/%s/" % (OLD, NEW), str(c.m.root / ALICE)])
    wait_until(lambda: by_id(c.emu)[c.cid]["personalNotes"] == NEW, timeout=60,
               what="the save on the server")
    settle(c.m)
    assert vcf_files(c.m.root) == c.files
    rename_on_server(c.emu, c.cid)
    want = sorted(SERVER_NAME if f == ALICE else f for f in c.files)
    wait_until(lambda: vcf_files(c.m.root) == want, timeout=20,
               what="the file to follow the server's rename after the save")
    assert uid_of((c.m.root / SERVER_NAME).read_text()) == c.cid
    assert "NOTE:" + NEW in (c.m.root / SERVER_NAME).read_text()
    assert set(by_id(c.emu)) == set(c.before)
    assert deleted_contacts(c.emu) == []
    assert c.m.errors() == "", c.m.errors()


def test_a_save_at_a_former_name_after_a_remount_updates_the_same_contact(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    with Emulator("--seed", str(seed)) as emu:
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            before = by_id(emu)
            cid = the_one(emu, "Alice Archer")["id"]
            files = vcf_files(m.root)
            buffer = (m.root / ALICE).read_bytes()
            rename_on_server(emu, cid)
            wait_until(lambda: followed(m, SERVER_NAME, ALICE), timeout=30,
                       what="the file to follow the server's rename")
            m.wait_synced()
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            assert SERVER_NAME in vcf_files(m.root), vcf_files(m.root)
            # An editor that had the old name open saves its buffer there.
            try:
                with open(m.root / ALICE, "wb") as f:
                    f.write(note_edit(buffer))
            except OSError as e:
                raise AssertionError("writing %r (a former name) failed: %s\nmount: %s\n"
                                     "errors: %s" % (ALICE, e, vcf_files(m.root), m.errors())) \
                    from None
            settle(m)
            after = by_id(emu)
            assert set(after) == set(before), "created %s, gone %s" % (
                set(after) - set(before), set(before) - set(after))
            assert after[cid]["personalNotes"] == NEW
            assert deleted_contacts(emu) == []
            assert vcf_files(m.root) == files, vcf_files(m.root)
            assert uid_of((m.root / ALICE).read_text()) == cid
            assert m.errors() == "", m.errors()


# ---- copies stay refused -----------------------------------------------------------------

def assert_copy_refused(emu, m, src, dst, before):
    p = subprocess.run(["cp", str(src), str(dst)], capture_output=True)
    assert p.returncode != 0 and b"File exists" in p.stderr, (
        "cp %s -> %s: exit %d, %r" % (src.name, dst.name, p.returncode, p.stderr))
    # A local draft: the copy's bytes stay readable under its name.
    assert dst.read_bytes() == src.read_bytes()
    errors = m.errors()
    assert dst.name in errors and src.name in errors, errors
    settle(m)
    after = by_id(emu)
    assert set(after) == set(before), "created %s" % (set(after) - set(before))
    assert deleted_contacts(emu) == []


def test_cp_of_a_contact_to_a_name_it_never_had_stays_refused(seeded):
    """A contact renamed on the server has a former name; a name it never
    had is still no way to a second copy of it."""
    emu, m = seeded
    m.expect_errors.append(re.compile(EXPECTED_ERRORS))
    cid = the_one(emu, "Alice Archer")["id"]
    rename_on_server(emu, cid)
    wait_until(lambda: followed(m, SERVER_NAME, ALICE), timeout=30,
               what="the file to follow the server's rename")
    settle(m)
    before = by_id(emu)
    assert_copy_refused(emu, m, m.root / SERVER_NAME, m.root / "Alice Copy.vcf", before)
    assert by_id(emu)[cid]["changeKey"] == before[cid]["changeKey"]


def test_a_former_name_of_another_contact_does_not_let_a_copy_in(seeded):
    """Bob was "Bob Baker.vcf" before a rename on the server; a copy of
    Alice written there is neither an update of Bob nor of Alice."""
    emu, m = seeded
    m.expect_errors.append(re.compile(EXPECTED_ERRORS))
    bob = the_one(emu, "Bob Baker")["id"]
    graph(emu, "PATCH", "/contacts/" + bob, {"givenName": "Robert", "displayName": "Robert Baker"})
    wait_until(lambda: followed(m, "Robert Baker.vcf", "Bob Baker.vcf"), timeout=30,
               what="Bob's file to follow the server's rename")
    settle(m)
    before = by_id(emu)
    assert_copy_refused(emu, m, m.root / ALICE, m.root / "Bob Baker.vcf", before)
    after = by_id(emu)
    for cid, c in before.items():
        assert after[cid]["changeKey"] == c["changeKey"], c["displayName"]


# ---- whatever the write changed ----------------------------------------------------------

CHANGES = {
    "FN and N": fn_edit,
    "N only": lambda d: d.replace(b"N:Archer;Alice;", b"N:Archer;Alicia;"),
    "ORG": lambda d: d.replace(b"ORG:Acme", b"ORG:Acme Corporation"),
    "an emptied FN": lambda d: re.sub(rb"(?m)^FN:Alice Archer", b"FN:", d),
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_write_never_renames_the_file_it_wrote_whatever_it_changed(seeded, what):
    emu, m = seeded
    before = by_id(emu)
    cid = the_one(emu, "Alice Archer")["id"]
    files = vcf_files(m.root)
    # The note changes too, so that every write has something to send.
    data = note_edit(CHANGES[what]((m.root / ALICE).read_bytes()))
    with open(m.root / ALICE, "wb") as f:
        f.write(data)
    wait_until(lambda: by_id(emu)[cid]["personalNotes"] == NEW, timeout=60,
               what="the write on the server")
    settle(m)
    assert set(by_id(emu)) == set(before)
    assert deleted_contacts(emu) == []
    assert vcf_files(m.root) == files, "after a write that changed %s the mount lists %s" % (
        what, vcf_files(m.root))
    assert uid_of((m.root / ALICE).read_text()) == cid
    assert m.errors() == "", m.errors()


def test_a_viewer_holding_the_file_open_read_only_keeps_reading_it_across_a_server_rename(
        seeded):
    """A rename from the server does not wait for readers (only writers hold
    a name): the file moves, and a program that has it open read-only reads
    the same file on through the same descriptor, its new text included."""
    emu, m = seeded
    cid = the_one(emu, "Alice Archer")["id"]
    path = m.root / ALICE
    fd = os.open(path, os.O_RDONLY)
    try:
        first = os.pread(fd, 1 << 20, 0)
        assert b"FN:Alice Archer" in first
        rename_on_server(emu, cid)
        wait_until(lambda: SERVER_NAME in vcf_files(m.root), timeout=30,
                   what="the file to follow the server's name while only a reader has it")
        assert ALICE not in vcf_files(m.root)
        st = os.fstat(fd)
        assert st.st_ino == os.stat(m.root / SERVER_NAME).st_ino
        now = os.pread(fd, 1 << 20, 0)
        assert b"FN:" + SERVER_FN.encode() in now, now
    finally:
        os.close(fd)
    assert m.errors() == "", m.errors()
