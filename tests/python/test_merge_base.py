"""A stale copy of a card never silently reverts a change made elsewhere (issue 20).

Every card the mount renders names the server version it was rendered from in
a bookkeeping line X-CONTACTFS-VERSION:<token>. A card written back is merged
three ways: ours = what was written, base = the version its line names,
theirs = the server's current version. A field only the server changed keeps
the server's value, a field only the writer changed goes to the server, a
field both changed to different values is a conflict (docs/design.md §6: theirs in the
file, ours beside it as NAME.vcf.conflict-TIME, a line in .contactfs/errors
starting with "conflict"). A card naming a version the cache never rendered is
applied as before and reported; a card without the line is taken as written
against the current version, silently (so stripping the lines from a backup
forces its content over the server).

The writers here are what people use: a Python program holding the text it
read and saving with each of the three ordinary save patterns (in place, temp
file + rename over, rename the original away + write anew + delete the
backup), vim holding its buffer while the contact changes on the server,
rsync and tar restoring an older backup, and, last, three stale writers of
distinct fields and a remote editor of yet another field, for many rounds
through a server that throttles, fails and lags.

Every test mounts for real against the emulator (tests/graph_emulator); server
side changes go through the emulator's Graph API, as another client (Outlook)
would make them. The random test prints its seed; CONTACTFS_MERGE_SEED=N
replays its choices.
"""
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from emulator_proc import SERVER, Emulator
from mount_proc import Mount, need_fuse, server_contacts, vcf_files, wait_until
from test_mount_save import pty_session, tool
from test_mount_sync import DELETE_GRACE_S, graph, make_backup, restore, seed_box, unfold, \
    wait_quiet, write_seed, writes_seen

sys.path.insert(0, str(SERVER.parent))
import generator  # noqa: E402  (the emulator's own JPEG writer, for photos)


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


# ---- the mailbox ---------------------------------------------------------------

ALICE = "Alice Archer.vcf"
BOB = "Bob Baker.vcf"


def alice_contact():
    return {"givenName": "Alice", "surname": "Archer", "displayName": "Alice Archer",
            "emailAddresses": [{"address": "alice@example.org", "name": "Alice Archer"}],
            "businessPhones": ["+1 555 0100"], "mobilePhone": "+1 555 0199",
            "companyName": "Acme", "department": "Research", "jobTitle": "Engineer",
            "businessHomePage": "https://acme.example/alice",
            "personalNotes": "original note"}


def bob_contact():
    return {"givenName": "Bob", "surname": "Baker", "displayName": "Bob Baker",
            "emailAddresses": [{"address": "bob@example.org", "name": "Bob Baker"}],
            "jobTitle": "Baker", "personalNotes": "bob note"}


@contextlib.contextmanager
def mounted(tmp_path, contacts=None, **mount_opts):
    """(emu, m): the emulator over contacts (Alice and Bob unless told) and
    the mount of it, with a short poll, synced."""
    if contacts is None:
        contacts = [alice_contact(), bob_contact()]
    seed = write_seed(tmp_path, dict(seed_box(contacts), seed=20))
    mount_opts.setdefault("poll", 1)
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, **mount_opts) as m:
        m.wait_synced()
        yield emu, m


def by_name(emu):
    out = {}
    for c in server_contacts(emu):
        assert c["displayName"] not in out, "two contacts named %r" % c["displayName"]
        out[c["displayName"]] = c
    return out


def patch(emu, cid, body, patience=120):
    """PATCH a contact as another client would (no If-Match), retrying the
    429s and 503s the emulator's faults give; returns the server's answer."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return graph(emu, "PATCH", "/contacts/" + cid, body)
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or time.monotonic() > deadline:
                raise
            ra = e.headers.get("Retry-After")
            time.sleep(float(ra) if ra else 0.2)


def jpeg(shade):
    return generator.tiny_jpeg(16, 16, lambda bx, by: shade + 8 * bx)


def put_photo(emu, cid, data):
    """Set a contact's photo on the server, as Outlook would."""
    req = urllib.request.Request(emu.url + "/v1.0/me/contacts/%s/photo/$value" % cid, data=data,
                                 method="PUT", headers={"Authorization": "Bearer " + emu.token,
                                                        "Content-Type": "image/jpeg"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def server_photo_sha(c):
    return (c.get("photo") or {}).get("sha256")


def photo_puts(emu):
    return sum(n for route, n in emu.requests()["by_route"].items()
               if route.split(" ", 1)[0] in ("PUT", "PATCH") and "/photo" in route)


# ---- cards as text -------------------------------------------------------------

def read(path):
    """The file's text exactly as stored (CR LF kept)."""
    return path.read_bytes().decode("utf-8")


def properties(text):
    """[(NAME, params, value)] of a card, unfolded, any group dropped."""
    out = []
    for line in re.split(r"\r?\n", unfold(text.encode("utf-8"))):
        mm = re.match(r"(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)((?:;[^:]*)?):(.*)$", line)
        if mm:
            out.append((mm.group(1).upper(), mm.group(2).upper(), mm.group(3)))
    return out


def first(text, name, param=None):
    for n, params, value in properties(text):
        if n == name and (param is None or param in params):
            return value
    return None


def versions(text):
    return [v for n, _p, v in properties(text) if n == "X-CONTACTFS-VERSION"]


def photo_of(text):
    """The PHOTO's bytes (None without one)."""
    for n, _p, v in properties(text):
        if n == "PHOTO":
            mm = re.match(r"data:[^,]*;base64,(.*)$", v, re.S)
            return base64.b64decode("".join((mm.group(1) if mm else v).split()))
    return None


def fields(text):
    """What a card says of the fields the tests change."""
    org = first(text, "ORG")
    return {"note": first(text, "NOTE"), "title": first(text, "TITLE"),
            "cell": first(text, "TEL", "CELL"),
            "department": org.split(";")[1] if org and ";" in org else None}


# Graph's name for each field of fields().
GRAPH = {"note": "personalNotes", "title": "jobTitle", "cell": "mobilePhone",
         "department": "department"}


def server_fields(c):
    return {k: c.get(g) for k, g in GRAPH.items()}


def eol(text):
    return "\r\n" if "\r\n" in text else "\n"


def set_prop(text, name, value, param=None):
    """text with the value of its first NAME property (having param among
    its parameters, if given) replaced by value."""
    pat = re.compile(r"^((?:[A-Za-z0-9-]+\.)?%s((?:;[^:\r\n]*)?):)[^\r\n]*" % re.escape(name),
                     re.M | re.I)
    for mm in pat.finditer(text):
        if param is None or param.upper() in mm.group(2).upper():
            return text[:mm.start()] + mm.group(1) + value + text[mm.end():]
    raise AssertionError("no %s%s line in the card:\n%s" % (name, ";" + param if param else "",
                                                           text))


def without_versions(text):
    """text with every X-CONTACTFS-VERSION line (and its folds) removed."""
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for line in lines:
        if skipping and line[:1] in (" ", "\t"):
            continue
        skipping = re.match(r"X-CONTACTFS-VERSION[;:]", line, re.I) is not None
        if not skipping:
            out.append(line)
    return "".join(out)


def with_version(text, token):
    """text naming version token (and no other)."""
    text = without_versions(text)
    i = text.upper().rindex("END:VCARD")
    return text[:i] + "X-CONTACTFS-VERSION:" + token + eol(text) + text[i:]


def wait_shows(path, timeout=30, **want):
    """Until the file at path says what want says (keys of fields(), or
    photo=bytes)."""
    def now():
        try:
            text = read(path)
        except FileNotFoundError:
            return None
        got = fields(text)
        got["photo"] = photo_of(text)
        return all(got[k] == v for k, v in want.items()) and text
    return wait_until(now, timeout=timeout, what="%s to show %s" % (
        path.name, {k: (v if k != "photo" else "a photo of %d bytes" % len(v))
                    for k, v in want.items()}))


# ---- saving as programs do ------------------------------------------------------

def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def save_in_place(path, text, tag=""):
    """open O_TRUNC, write, close (nano, cp, vim with backupcopy=yes)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        write_all(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def save_temp_rename(path, text, tag=""):
    """write a scratch file beside it, rename it over (GIO, rsync, khard)."""
    tmp = path.with_name(".%s.tmp%s%d" % (path.name, tag, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(tmp, path)


def save_rename_away(path, text, tag=""):
    """rename the original to name~, write a new file, delete the backup
    (vim with backupcopy=no, emacs)."""
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.unlink(backup)


SAVES = {"in-place": save_in_place, "temp-rename": save_temp_rename,
         "rename-away": save_rename_away}


# ---- what the mount reports -------------------------------------------------------

ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  (.*?): (.*)$")
# The line for a card whose base is unknown: "... applied over newer server
# changes it could not be merged with".
UNMERGED = re.compile(r"(?i)applied over newer\b.*\bmerged?\b")


def error_lines(m):
    return [line for line in m.errors().splitlines() if line.strip()]


def messages(m):
    """The message part of each .contactfs/errors line."""
    out = []
    for line in error_lines(m):
        mm = ERROR_LINE.match(line)
        out.append(mm.group(2) if mm else line)
    return out


def conflict_lines(m):
    return [msg for msg in messages(m) if msg.startswith("conflict")]


def conflict_copies(folder, name=None):
    return sorted(n for n in os.listdir(folder)
                  if ".vcf.conflict-" in n and (name is None or n.startswith(name + ".conflict-")))


# ---- 0. the version line -----------------------------------------------------------

def test_every_card_names_its_server_version_in_one_line_that_changes_with_it(tmp_path):
    with mounted(tmp_path) as (emu, m):
        alice = by_name(emu)["Alice Archer"]
        for rel in vcf_files(m.root):
            tokens = versions(read(m.root / rel))
            assert len(tokens) == 1 and tokens[0].strip(), \
                "%s does not name its version in one X-CONTACTFS-VERSION line:\n%s" % (
                    rel, read(m.root / rel))
        path = m.root / ALICE
        v1 = versions(read(path))
        assert versions(read(path)) == v1, "the token changed with nothing changed"

        patch(emu, alice["id"], {"jobTitle": "Director"})
        text = wait_shows(path, title="Director")
        v2 = versions(text)
        assert len(v2) == 1 and v2 != v1, "a new server version kept the token %s" % v1

        put_photo(emu, alice["id"], jpeg(60))
        text = wait_shows(path, photo=jpeg(60))
        v3 = versions(text)
        assert len(v3) == 1 and v3 not in (v1, v2), "a new photo kept the token %s" % v2
        # The bookkeeping line is the mount's, never the contact's.
        m.wait_synced()
        assert "X-CONTACTFS-VERSION" not in json.dumps(by_name(emu)["Alice Archer"])


# ---- 1, 2. a Python writer holding the text it read ---------------------------------------

@pytest.mark.parametrize("pattern", list(SAVES))
def test_a_stale_edit_of_one_field_merges_with_a_server_change_of_another(pattern, tmp_path):
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        before = by_name(emu)
        alice, bob = before["Alice Archer"], before["Bob Baker"]
        old = read(path)
        assert fields(old)["title"] == "Engineer"
        patch(emu, alice["id"], {"jobTitle": "Director"})        # theirs: the title
        wait_shows(path, title="Director")

        SAVES[pattern](path, set_prop(old, "NOTE", "edited note"))   # ours: the note
        m.wait_synced()
        after = server_contacts(emu)
        assert sorted(c["id"] for c in after) == sorted((alice["id"], bob["id"])), \
            "the save made or lost a contact:\n" + m.log_text()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note", "our edit did not reach the server"
        assert a["jobTitle"] == "Director", (
            "the stale text reverted the server's change of the title: the server has %r"
            % a["jobTitle"])
        assert by_name(emu)["Bob Baker"]["changeKey"] == bob["changeKey"]
        text = wait_shows(path, title="Director", note="edited note")
        assert len(versions(text)) == 1, text
        assert "X-CONTACTFS-VERSION" not in json.dumps(a)
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


@pytest.mark.parametrize("pattern", list(SAVES))
def test_a_stale_edit_of_the_field_the_server_changed_is_a_conflict_kept_beside_the_file(
        pattern, tmp_path):
    with mounted(tmp_path, expect_errors=[r"conflict"]) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        old = read(path)
        patch(emu, alice["id"], {"jobTitle": "Director"})        # theirs
        wait_shows(path, title="Director")

        SAVES[pattern](path, set_prop(old, "TITLE", "Manager"))  # ours, the same field
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["jobTitle"] == "Director", (
            "the server did not keep its version of a field both sides changed: it has %r"
            % a["jobTitle"])
        assert a["personalNotes"] == "original note"
        assert [c["id"] for c in server_contacts(emu)].count(alice["id"]) == 1
        assert len(server_contacts(emu)) == 2
        copies = wait_until(lambda: conflict_copies(m.root, ALICE), timeout=30,
                            what="a conflict copy beside %s" % ALICE)
        assert len(copies) == 1, copies
        assert fields(read(m.root / copies[0]))["title"] == "Manager", \
            "the conflict copy does not hold our version:\n" + read(m.root / copies[0])
        wait_shows(path, title="Director")
        m.wait_synced()
        assert len(conflict_lines(m)) == 1, m.errors()
        assert vcf_files(m.root) == [ALICE, BOB]


@pytest.mark.parametrize("pattern", list(SAVES))
def test_a_save_after_a_conflict_merges_with_the_file_never_with_the_conflict_copy(
        pattern, tmp_path):
    """The conflict copy holds the save that lost; the file shows the
    server's version. A later save of the file (another field, from what
    the file shows) merges with that, never with the copy (it shows no
    contact but carries the contact's UID): else the lost save comes back
    over the server's side of the conflict, which then exists nowhere
    (issue 17, found by the soak)."""
    # No delta round: the save goes out against the version the file shows
    # and meets the server's change as a 412 (the conflict of the outbox).
    with mounted(tmp_path, poll=3600, expect_errors=[r"conflict"]) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        old = read(path)
        patch(emu, alice["id"], {"personalNotes": "remote note"})      # theirs
        save_in_place(path, set_prop(old, "NOTE", "losing note"))      # ours: a conflict
        copies = wait_until(lambda: conflict_copies(m.root, ALICE), timeout=30,
                            what="a conflict copy beside %s" % ALICE)
        assert fields(read(m.root / copies[0]))["note"] == "losing note"
        m.wait_synced()
        assert by_name(emu)["Alice Archer"]["personalNotes"] == "remote note"
        text = wait_shows(path, note="remote note")

        SAVES[pattern](path, set_prop(text, "TITLE", "Lead"))           # a fresh save
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["jobTitle"] == "Lead", "the fresh save did not reach the server"
        assert a["personalNotes"] == "remote note", (
            "the save that lost the conflict came back from its conflict copy: the server "
            "has %r, and the remote edit it conflicted with is gone\n%s"
            % (a["personalNotes"], m.log_text()))
        wait_shows(path, note="remote note", title="Lead")
        assert conflict_copies(m.root, ALICE) == copies
        assert len(conflict_lines(m)) == 1, m.errors()


@pytest.mark.parametrize("when", ["at-once", "after-its-upload"])
def test_a_buffer_saved_again_is_no_conflict_with_its_own_earlier_save(when, tmp_path):
    """An editor keeps its buffer across saves (vim :w, edit, :w): the second
    save names the version the buffer was read at, and what changed since is
    the buffer's own first save, never a conflict."""
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        buffer = read(path)
        buffer = set_prop(buffer, "NOTE", "first edit")
        save_in_place(path, buffer)
        if when == "after-its-upload":
            m.wait_synced()
            assert by_name(emu)["Alice Archer"]["personalNotes"] == "first edit"
        buffer = set_prop(buffer, "NOTE", "second edit")
        save_in_place(path, buffer)
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["id"] == alice["id"] and len(server_contacts(emu)) == 2
        assert a["personalNotes"] == "second edit", (
            "the second save of the same buffer did not reach the server: it has %r\n%s"
            % (a["personalNotes"], m.errors()))
        assert a["jobTitle"] == "Engineer"
        assert conflict_copies(m.root) == [], m.errors()
        assert error_lines(m) == []
        wait_shows(path, note="second edit")


# ---- 3. vim keeps its buffer -----------------------------------------------------------

def test_vim_saving_a_buffer_older_than_a_remote_change_keeps_that_change(tmp_path):
    vim = tool("vim")
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        opened, go = tmp_path / "vim-has-the-file", tmp_path / "vim-may-go-on"
        failed = []

        def remote_edit():
            try:
                wait_until(opened.exists, timeout=60, what="vim to have read the file")
                patch(emu, alice["id"], {"jobTitle": "Director"})
                wait_shows(path, title="Director")
            except BaseException as e:     # reported below, once vim is done
                failed.append(e)
            finally:
                go.touch()

        t = threading.Thread(target=remote_edit, daemon=True)
        t.start()
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, TERM="xterm", HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8")
        # vim shows the file, says so, and waits (its buffer as read) until the
        # change made elsewhere is in the mount; then edits the note and saves.
        # Where vim sees that the file changed since it read it, it asks
        # whether to write anyway: "y" (elsewhere the "y" is an operator the
        # Esc cancels). Then :q, which fails unless the write succeeded.
        hold = (":call writefile([], '%s') | while !filereadable('%s') | sleep 100m | endwhile"
                " | echo 'RES' . 'UMED'\r" % (opened, go))
        steps = [("original note", hold),
                 ("RESUMED", ":%s/original note/edited note/\r:w\r"),
                 ("really want to write|written", "y\x1b"),
                 (None, ":q\r")]
        rc, screen = pty_session([vim, "-N", "-u", "NONE", "-i", "NONE", str(path)], steps,
                                 env=env, timeout=60)
        t.join(timeout=60)
        assert not failed, failed
        assert rc == 0, screen
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note", "vim's edit did not reach the server"
        assert a["jobTitle"] == "Director", (
            "vim's stale buffer reverted the title changed elsewhere: the server has %r"
            % a["jobTitle"])
        assert len(server_contacts(emu)) == 2
        wait_shows(path, title="Director", note="edited note")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


# ---- 4. photos -----------------------------------------------------------------------

def test_a_card_read_before_its_photo_arrived_saves_without_removing_or_reporting_it(tmp_path):
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        old = read(path)
        assert photo_of(old) is None
        photo = jpeg(90)
        put_photo(emu, alice["id"], photo)              # the photo arrives after the read
        wait_shows(path, photo=photo)
        emu.admin("POST", "requests/reset")

        save_in_place(path, set_prop(old, "NOTE", "edited note"))
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note"
        assert server_photo_sha(a) == hashlib.sha256(photo).hexdigest()
        assert photo_puts(emu) == 0
        assert not [msg for msg in messages(m) if "photo" in msg], (
            "a card that never had the photo was taken as removing it:\n" + m.errors())
        assert error_lines(m) == []
        wait_shows(path, photo=photo, note="edited note")


def test_a_card_with_its_bases_photo_keeps_the_newer_photo_from_the_server(tmp_path):
    older, newer = jpeg(40), jpeg(170)
    alice = dict(alice_contact(), photo_base64=base64.b64encode(older).decode())
    with mounted(tmp_path, contacts=[alice, bob_contact()]) as (emu, m):
        path = m.root / ALICE
        cid = by_name(emu)["Alice Archer"]["id"]
        old = wait_shows(path, photo=older)
        put_photo(emu, cid, newer)                      # changed elsewhere after the read
        wait_shows(path, photo=newer)
        emu.admin("POST", "requests/reset")

        save_in_place(path, set_prop(old, "NOTE", "edited note"))
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note"
        assert server_photo_sha(a) == hashlib.sha256(newer).hexdigest(), (
            "the stale card's photo replaced the newer one on the server (%d photo uploads)"
            % photo_puts(emu))
        assert photo_puts(emu) == 0
        wait_shows(path, photo=newer, note="edited note")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


# ---- 5. a base the mount does not know, no base at all ---------------------------------------

def with_photo(text, data):
    """text with its PHOTO (if any) replaced by a vCard 3.0 one of data."""
    lines = [l for l in re.split(r"\r?\n", unfold(text.encode("utf-8")))
             if l and not re.match(r"(?:[A-Za-z0-9-]+\.)?PHOTO[;:]", l, re.I)]
    end = next(i for i, l in enumerate(lines) if l.upper() == "END:VCARD")
    lines.insert(end, "PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(data).decode())
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("pattern", sorted(SAVES))
def test_a_stale_card_with_a_new_photo_keeps_it_when_merged_with_a_server_change(
        pattern, tmp_path):
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        cid = by_name(emu)["Alice Archer"]["id"]
        old = read(path)                                # the buffer
        patch(emu, cid, {"jobTitle": "Remote Title"})
        wait_shows(path, title="Remote Title")
        mine = jpeg(60)
        SAVES[pattern](path, with_photo(set_prop(old, "NOTE", "with my photo"), mine))
        # At once, the file shows the merge: the server's title, our note
        # and our photo.
        wait_shows(path, timeout=5, title="Remote Title", note="with my photo", photo=mine)
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert (a["jobTitle"], a["personalNotes"]) == ("Remote Title", "with my photo")
        assert server_photo_sha(a) == hashlib.sha256(mine).hexdigest()
        assert error_lines(m) == [] and conflict_copies(m.root) == []


def test_a_stale_card_saved_while_another_writers_photo_waits_keeps_that_photo(tmp_path):
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        stale = read(path)                              # one writer's buffer
        emu.faults({"latency_ms": 1500})                # the other's photo waits to go
        theirs = jpeg(120)
        save_in_place(path, with_photo(read(path), theirs))
        save_in_place(path, set_prop(stale, "TITLE", "stale title"))
        wait_shows(path, timeout=5, title="stale title", photo=theirs)
        emu.faults({"latency_ms": 0})
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["jobTitle"] == "stale title"
        assert server_photo_sha(a) == hashlib.sha256(theirs).hexdigest()
        wait_shows(path, title="stale title", photo=theirs)
        assert error_lines(m) == [] and conflict_copies(m.root) == []


def test_a_card_naming_an_unknown_version_is_applied_over_the_server_and_reported(tmp_path):
    with mounted(tmp_path, expect_errors=[UNMERGED.pattern]) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        old = read(path)
        patch(emu, alice["id"], {"jobTitle": "Director"})
        wait_shows(path, title="Director")

        made_up = "never-rendered-%08x" % random.randrange(1 << 32)
        save_in_place(path, with_version(set_prop(old, "NOTE", "edited note"), made_up))
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note", "the edit was not applied"
        # As before issue 20: what the card says otherwise than the server is sent.
        assert a["jobTitle"] == "Engineer"
        assert len(server_contacts(emu)) == 2
        wait_until(lambda: [msg for msg in messages(m) if UNMERGED.search(msg)], timeout=30,
                   what="an errors line saying the edit was applied over newer server changes "
                        "it could not be merged with (errors: %r)" % m.errors())
        assert conflict_copies(m.root) == []


def test_a_card_without_a_version_line_is_applied_over_the_server_silently(tmp_path):
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        old = read(path)
        patch(emu, alice["id"], {"jobTitle": "Director"})
        wait_shows(path, title="Director")

        save_in_place(path, without_versions(set_prop(old, "NOTE", "edited note")))
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "edited note"
        assert a["jobTitle"] == "Engineer", "a card without a version line was merged, " \
            "not taken as written against the current version"
        wait_shows(path, title="Engineer", note="edited note")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


@pytest.mark.parametrize("remote", ["before the read", "while open"])
def test_a_handle_that_read_the_file_merges_what_it_writes_without_the_version_line(
        remote, tmp_path):
    """A program that keeps the file open, reads it and writes its edit back
    through the same descriptor, dropping the lines it does not know (our
    version line among them): the handle knows the version it loaded, so a
    change made elsewhere to another field is kept."""
    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        alice = by_name(emu)["Alice Archer"]
        if remote == "before the read":
            patch(emu, alice["id"], {"jobTitle": "Director"})
            wait_shows(path, title="Director")
        fd = os.open(path, os.O_RDWR)
        try:
            text = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text += chunk
            text = text.decode("utf-8")
            if remote == "while open":
                patch(emu, alice["id"], {"jobTitle": "Director"})
                wait_until(lambda: by_name(emu)["Alice Archer"]["jobTitle"] == "Director",
                           what="the remote change")
                m.wait_rounds(2)                   # the buffer is older than the server now
            mine = without_versions(set_prop(text, "NOTE", "written through the handle"))
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine.encode("utf-8"), 0)
        finally:
            os.close(fd)
        m.wait_synced()
        a = by_name(emu)["Alice Archer"]
        assert a["personalNotes"] == "written through the handle"
        assert a["jobTitle"] == "Director", "the handle's stale text reverted a change made " \
            "elsewhere"
        wait_shows(path, title="Director", note="written through the handle")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


# ---- 6. restores -------------------------------------------------------------------------

def change_both_on_the_server(emu, m):
    """After the backup: Alice's title and Bob's note change elsewhere."""
    c = by_name(emu)
    patch(emu, c["Alice Archer"]["id"], {"jobTitle": "Director"})
    patch(emu, c["Bob Baker"]["id"], {"personalNotes": "bob changed remotely"})
    wait_shows(m.root / ALICE, title="Director")
    wait_shows(m.root / BOB, note="bob changed remotely")
    return by_name(emu)


def edit_backup(tool_name, backup, tmp_path, edit):
    """Run edit(directory) on the backup's files (a tar is unpacked, edited
    and packed again)."""
    if tool_name == "rsync":
        edit(backup)
        return
    staging = tmp_path / "unpacked"
    staging.mkdir()
    tar(["x", "-f", str(backup), "-C", str(staging)])
    edit(staging)
    tar(["c", "-f", str(backup), "-C", str(staging), "."])


def tar(args):
    r = subprocess.run(["tar", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def restore_and_settle(tool_name, backup, m):
    r = restore(tool_name, backup, m.root)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    wait_quiet(m, time.time(), DELETE_GRACE_S + 2)


@pytest.mark.parametrize("tool_name", ["rsync", "tar"])
def test_restoring_an_older_backup_as_it_was_sends_nothing_and_shows_the_server_version(
        tool_name, tmp_path):
    with mounted(tmp_path) as (emu, m):
        backup = make_backup(tool_name, m.root, tmp_path)
        now = change_both_on_the_server(emu, m)
        emu.admin("POST", "requests/reset")

        restore_and_settle(tool_name, backup, m)
        assert writes_seen(emu) == {}, (
            "restoring the backup as it was sent changes: %s" % emu.requests()["by_route"])
        after = by_name(emu)
        assert after["Alice Archer"]["jobTitle"] == "Director"
        assert after["Bob Baker"]["personalNotes"] == "bob changed remotely"
        for name in ("Alice Archer", "Bob Baker"):
            assert after[name]["changeKey"] == now[name]["changeKey"], name
        wait_shows(m.root / ALICE, title="Director", note="original note")
        wait_shows(m.root / BOB, note="bob changed remotely")
        assert vcf_files(m.root) == [ALICE, BOB]
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


@pytest.mark.parametrize("tool_name", ["rsync", "tar"])
def test_restoring_an_older_backup_with_an_edit_sends_only_that_edit(tool_name, tmp_path):
    with mounted(tmp_path) as (emu, m):
        backup = make_backup(tool_name, m.root, tmp_path)
        now = change_both_on_the_server(emu, m)

        def edit(d):
            p = d / ALICE
            p.write_bytes(set_prop(read(p), "NOTE", "edited in the backup").encode("utf-8"))
        edit_backup(tool_name, backup, tmp_path, edit)

        restore_and_settle(tool_name, backup, m)
        after = by_name(emu)
        a, b = after["Alice Archer"], after["Bob Baker"]
        assert a["personalNotes"] == "edited in the backup", "the backup's edit was not sent"
        assert a["jobTitle"] == "Director", (
            "restoring the older backup reverted the title changed since: the server has %r"
            % a["jobTitle"])
        assert b["personalNotes"] == "bob changed remotely", (
            "restoring the older backup reverted Bob's note changed since")
        assert b["changeKey"] == now["Bob Baker"]["changeKey"], "Bob's unedited card was sent"
        assert len(after) == 2 and a["id"] == now["Alice Archer"]["id"]
        wait_shows(m.root / ALICE, title="Director", note="edited in the backup")
        wait_shows(m.root / BOB, note="bob changed remotely")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


@pytest.mark.parametrize("tool_name", ["rsync", "tar"])
def test_restoring_a_backup_stripped_of_its_version_lines_overwrites_the_server(
        tool_name, tmp_path):
    with mounted(tmp_path) as (emu, m):
        backup = make_backup(tool_name, m.root, tmp_path)
        now = change_both_on_the_server(emu, m)

        def strip(d):
            files = [str(d / rel) for rel in vcf_files(d)]
            r = subprocess.run(["sed", "-i", "/^X-CONTACTFS-VERSION/d", *files],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            for f in files:
                assert "X-CONTACTFS-VERSION" not in open(f, encoding="utf-8").read()
        edit_backup(tool_name, backup, tmp_path, strip)

        restore_and_settle(tool_name, backup, m)
        after = by_name(emu)
        assert after["Alice Archer"]["jobTitle"] == "Engineer", \
            "the backup's title did not win over the server's"
        assert after["Bob Baker"]["personalNotes"] == "bob note", \
            "the backup's note did not win over the server's"
        assert sorted(c["id"] for c in after.values()) == \
            sorted(c["id"] for c in now.values())
        wait_shows(m.root / ALICE, title="Engineer")
        wait_shows(m.root / BOB, note="bob note")
        assert conflict_copies(m.root) == []
        assert error_lines(m) == []


# ---- 7. many stale writers and a remote editor, through faults ------------------------------

WRITERS = (("note", "NOTE", None), ("title", "TITLE", None), ("cell", "TEL", "CELL"))
ROUNDS = 8          # per writer, and for the remote editor: 32 changes in all


def test_stale_writers_of_distinct_fields_and_a_remote_editor_never_conflict_and_lose_nothing(
        tmp_path):
    seed = int(os.environ.get("CONTACTFS_MERGE_SEED") or random.randrange(1 << 32))
    print("seed %d (CONTACTFS_MERGE_SEED=%d replays the choices)" % (seed, seed))
    rng = random.Random(seed)
    # Every choice is drawn here, so a seed replays them (not the timing).
    plans = {key: [(rng.uniform(0, 1.5), rng.choice(list(SAVES)), rng.uniform(0, 0.5))
                   for _ in range(ROUNDS)] for key, _n, _p in WRITERS}
    remote_plan = [rng.uniform(0.2, 1.5) for _ in range(ROUNDS)]

    with mounted(tmp_path) as (emu, m):
        path = m.root / ALICE
        cid = by_name(emu)["Alice Archer"]["id"]
        emu.faults({"seed": seed, "latency_ms": 40, "rate_429": 0.1, "rate_503": 0.1,
                    "retry_after": 0.2})
        lock = threading.Lock()          # one save at a time, as editors save at moments
        acked = dict(server_fields(by_name(emu)["Alice Archer"]))
        trouble, history = [], []

        def writer(key, name, param):
            for r, (hold, pattern, gap) in enumerate(plans[key]):
                try:
                    with lock:
                        text = read(path)          # the buffer
                    time.sleep(hold)               # the file may change meanwhile
                    value = "%s %d" % (key, r) if key != "cell" else "+1 555 07%02d" % r
                    with lock:
                        SAVES[pattern](path, set_prop(text, name, value, param), tag=key)
                        acked[key] = value         # close (or rename) returned: acknowledged
                    history.append("%s round %d: %s by %s over %s" % (
                        key, r, value, pattern, versions(text)))
                except Exception as e:
                    trouble.append("%s round %d: %r" % (key, r, e))
                time.sleep(gap)

        def remote():
            for r, pause in enumerate(remote_plan):
                time.sleep(pause)
                try:
                    value = "Dept %d" % r
                    patch(emu, cid, {"department": value})
                    acked["department"] = value
                    history.append("remote round %d: %s" % (r, value))
                except Exception as e:
                    trouble.append("remote round %d: %r" % (r, e))

        threads = [threading.Thread(target=writer, args=w, daemon=True) for w in WRITERS]
        threads.append(threading.Thread(target=remote, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "seed %d: a writer hung" % seed
        emu.faults({"latency_ms": 0, "rate_429": 0, "rate_503": 0})
        context = "seed %d\n%s" % (seed, "\n".join(history))
        assert not trouble, "seed %d: saves failed:\n%s" % (seed, "\n".join(trouble))

        m.wait_synced(timeout=180)
        want = {k: acked[k] for k in GRAPH}
        a = by_name(emu)["Alice Archer"]
        assert a["id"] == cid and len(server_contacts(emu)) == 2, context
        got = server_fields(a)
        lost = {k: (want[k], got[k]) for k in want if got[k] != want[k]}
        assert not lost, "%s\nthe server lost acknowledged values (wanted, has): %s\n%s" % (
            context, lost, m.errors())
        wait_shows(path, timeout=60, **want)
        m.wait_synced()
        assert conflict_copies(m.root) == [], context
        assert conflict_lines(m) == [], context
        assert not [msg for msg in messages(m) if UNMERGED.search(msg)], context
        assert m.status().get("parked changes", "0").startswith("0"), m.status()
