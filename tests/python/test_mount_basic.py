"""The mount: what ls, cat, stat and the shell see, and what a plain edit
does on the server. Every test mounts for real against the emulator."""
import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, folder_paths, mailbox, need_fuse, server_contacts, vcf_files, \
    wait_until


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


def test_every_server_contact_is_a_file_in_its_folder_with_its_exact_size(tmp_path):
    with Emulator("--contacts", "40", "--folders", "3", "--photos", "4") as emu, \
            Mount(emu, tmp_path) as m:
        m.wait_synced()
        box = mailbox(emu)
        paths = folder_paths(box)
        files = vcf_files(m.root)
        assert len(files) == len(box["contacts"])
        for fid, p in paths.items():
            if p:
                assert (m.root / p).is_dir(), p
        for rel in files:
            data = (m.root / rel).read_bytes()
            assert data.startswith(b"BEGIN:VCARD"), rel
            assert os.stat(m.root / rel).st_size == len(data), rel
        st = os.stat(m.root / files[0])
        assert st.st_mode & 0o777 == 0o600
        assert os.stat(m.root).st_mode & 0o777 == 0o700


def _renameat2(src, dst, flags):
    """renameat2(2) through libc: 0, or raises OSError."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD = -100
    r = libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))
    return 0


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def test_inode_numbers_and_names_stay_the_same_across_a_remount(tmp_path):
    with Emulator("--contacts", "15", "--folders", "2") as emu:
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            before = {rel: os.stat(m.root / rel).st_ino for rel in vcf_files(m.root)}
            dirs = {d: os.stat(m.root / d).st_ino for d in os.listdir(m.root)
                    if (m.root / d).is_dir()}
        assert len(before) == 15
        with Mount(emu, tmp_path) as m:
            after = {rel: os.stat(m.root / rel).st_ino for rel in vcf_files(m.root)}
            assert after == before
            assert {d: os.stat(m.root / d).st_ino for d in dirs} == dirs


def test_rename_noreplace_refuses_an_existing_name_and_exchange_is_refused(tmp_path):
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        a, b = sorted(vcf_files(m.root))[:2]
        with pytest.raises(OSError) as e:
            _renameat2(m.root / a, m.root / b, RENAME_NOREPLACE)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(OSError) as e:
            _renameat2(m.root / a, m.root / b, RENAME_EXCHANGE)
        assert e.value.errno == errno.EINVAL
        # Both files as they were, and NOREPLACE to a free name works.
        assert sorted(vcf_files(m.root))[:2] == [a, b]
        _renameat2(m.root / a, m.root / "Renamed.vcf", RENAME_NOREPLACE)
        assert (m.root / "Renamed.vcf").exists() and not (m.root / a).exists()


def test_symlinks_are_scratch_links_of_contacts_are_refused_and_devices_cannot_be_made(
        tmp_path):
    with Emulator("--contacts", "2") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        first = sorted(vcf_files(m.root))[0]
        reset = emu.admin("POST", "requests/reset", {})
        assert reset is not None
        os.symlink("user@host.1234:1", m.root / ".#lock.vcf")
        assert os.readlink(m.root / ".#lock.vcf") == "user@host.1234:1"
        os.unlink(m.root / ".#lock.vcf")
        with pytest.raises(OSError) as e:
            os.link(m.root / first, m.root / "hard.vcf")
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            os.mkfifo(m.root / "fifo")
        assert e.value.errno == errno.EPERM
        # A scratch file linked to a new .vcf name (vdirsyncer, khard) is a
        # new contact; the scratch name stays until unlinked.
        (m.root / "tmp123").write_bytes(
            b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Linked Lena\r\nN:Lena;Linked;;;\r\n"
            b"UID:linked-lena-1\r\nEND:VCARD\r\n")
        os.link(m.root / "tmp123", m.root / "linked-lena-1.vcf")
        os.unlink(m.root / "tmp123")
        m.wait_synced()
        names = [c["displayName"] for c in server_contacts(emu)]
        assert names.count("Linked Lena") == 1
        assert len(names) == 3


def test_statfs_answers_and_the_kernel_lookup_count_falls_when_the_kernel_forgets(tmp_path):
    with Emulator("--contacts", "50", "--folders", "2") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        st = os.statvfs(m.root)
        assert st.f_namemax == 255 and st.f_bavail > 0
        subprocess.run(["ls", "-lR", str(m.root)], check=True, capture_output=True)
        held = int(m.status()["kernel"].split()[0])
        assert held >= 50
        # Ask the kernel to drop every unused dentry and inode: each forget
        # must take back exactly what lookups gave.
        Path("/proc/sys/vm/drop_caches").write_text("2")
        wait_until(lambda: int(m.status()["kernel"].split()[0]) < held // 4, timeout=10,
                   what="the kernel to forget the inodes")


def test_a_written_file_shows_its_new_size_before_and_after_close(tmp_path):
    with Emulator("--contacts", "1") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        (name,) = vcf_files(m.root)
        p = m.root / name
        old = p.read_bytes()
        new = re.sub(rb"NOTE:[^\r\n]*\r\n(?: [^\r\n]*\r\n)*", b"", old).replace(
            b"END:VCARD", b"NOTE:a longer note than before\r\nEND:VCARD")
        assert len(new) != len(old)
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, new)
            assert os.fstat(fd).st_size == len(new)
            assert os.stat(p).st_size == len(new)
        finally:
            os.close(fd)
        assert os.stat(p).st_size == len(new)
        assert p.read_bytes() == new
        m.wait_synced()
        (c,) = server_contacts(emu)
        assert c["personalNotes"] == "a longer note than before"


def test_closing_another_handle_never_commits_a_writers_empty_o_trunc(tmp_path):
    """A save opens with O_TRUNC, then writes. Another handle of the same
    file closing in between (a reader's late release, or an earlier writer
    that already flushed) must not send the empty text as the contact: no
    error, no draft, one update with the writer's bytes."""
    with Emulator("--contacts", "1") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        (name,) = vcf_files(m.root)
        p = m.root / name
        old = p.read_bytes()
        for step, note in enumerate(["after a reader", "after a writer"]):
            new = re.sub(rb"NOTE:[^\r\n]*\r\n(?: [^\r\n]*\r\n)*", b"", old).replace(
                b"END:VCARD", b"NOTE:" + note.encode() + b"\r\nEND:VCARD")
            if step == 0:
                other = os.open(p, os.O_RDONLY)
            else:
                other = os.open(p, os.O_RDWR)
                os.write(other, p.read_bytes())
                os.fsync(other)  # its writes are committed: nothing left to send
            w = os.open(p, os.O_WRONLY | os.O_TRUNC)
            os.close(other)  # closes while the writer's text is empty
            os.write(w, new)
            os.close(w)
            assert p.read_bytes() == new
            m.wait_synced()
            (c,) = server_contacts(emu)
            assert c["personalNotes"] == note
            assert "not a valid vCard" not in m.errors(), m.errors()
            old = new


def test_fsync_returns_the_servers_refusal_and_close_still_keeps_the_change(tmp_path):
    """fsync waits for the server's verdict: a mailbox that refuses writes
    (403) makes fsync fail with EACCES; the change stays queued (parked)."""
    with Emulator("--contacts", "1") as emu, \
            Mount(emu, tmp_path, expect_errors=[r"refused|ErrorAccessDenied|403"]) as m:
        m.wait_synced()
        upn = next(iter(emu.state()["mailboxes"]))
        emu.faults({"readonly_users": [upn]})
        (name,) = vcf_files(m.root)
        p = m.root / name
        new = p.read_bytes().replace(b"END:VCARD", b"NOTE:refused\r\nEND:VCARD")
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, new)
            with pytest.raises(OSError) as e:
                os.fsync(fd)
            assert e.value.errno == errno.EACCES
        finally:
            os.close(fd)
        assert p.read_bytes() == new
        s = m.status()
        assert s["parked changes"].startswith("1"), s
        emu.faults({"readonly_users": []})


def test_truncate_of_a_closed_contact_and_rmdir_of_a_folder_reach_the_server(tmp_path):
    with Emulator("--contacts", "1") as emu, \
            Mount(emu, tmp_path, expect_errors=[r"not a valid vCard"]) as m:
        m.wait_synced()
        (name,) = vcf_files(m.root)
        before = server_contacts(emu)[0]
        # truncate(2) of a closed file commits at once, as a close would:
        # nothing is not a vCard, so it fails with EINVAL, the file keeps
        # what it was cut to as a local draft, and the server keeps the
        # contact as it was.
        with pytest.raises(OSError) as e:
            os.truncate(m.root / name, 0)
        assert e.value.errno == errno.EINVAL
        # The kernel is told the new size from the notify thread.
        wait_until(lambda: os.stat(m.root / name).st_size == 0, timeout=5,
                   what="the truncated size")
        assert (m.root / name).read_bytes() == b""
        assert name in m.errors()
        os.mkdir(m.root / "Temporary")
        m.wait_synced()
        assert "Temporary" in [f["displayName"] for f in mailbox(emu)["folders"]]
        os.rmdir(m.root / "Temporary")
        m.wait_synced()
        assert "Temporary" not in [f["displayName"] for f in mailbox(emu)["folders"]]
        after = server_contacts(emu)[0]
        assert after["changeKey"] == before["changeKey"]


def test_unmount_sends_what_is_pending_before_the_daemon_exits(tmp_path):
    with Emulator("--contacts", "1") as emu:
        m = Mount(emu, tmp_path).start()
        try:
            m.wait_synced()
            emu.faults({"latency_ms": 800})
            (m.root / "Late Larry.vcf").write_bytes(
                b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Late Larry\r\nN:Larry;Late;;;\r\n"
                b"UID:late-larry\r\nEND:VCARD\r\n")
        finally:
            m.stop()  # fusermount3 -u, then wait for exit 0
        names = [c["displayName"] for c in server_contacts(emu)]
        assert names.count("Late Larry") == 1, names


def test_a_card_written_without_a_uid_gets_one_so_a_later_save_keeps_the_contact(tmp_path):
    with Emulator("--contacts", "1") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        p = m.root / "No Uid.vcf"
        p.write_bytes(b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Uid\r\nN:Uid;No;;;\r\n"
                      b"NOTE:first\r\nEND:VCARD\r\n")
        m.wait_synced()
        (c,) = [c for c in server_contacts(emu) if c["displayName"] == "No Uid"]
        wait_until(lambda: b"\r\nUID:" in p.read_bytes(), timeout=10, what="a UID in the file")
        # sed -i writes a temporary file and renames it over: the contact is
        # found again by the UID the file now carries.
        subprocess.run(["sed", "-i", "s/^NOTE:first/NOTE:second/", str(p)], check=True)
        m.wait_synced()
        after = [x for x in server_contacts(emu) if x["displayName"] == "No Uid"]
        assert [x["id"] for x in after] == [c["id"]]
        assert after[0]["personalNotes"] == "second"


def test_a_cache_mounted_again_with_another_graph_url_reads_everything_again(tmp_path):
    """Stored delta cursors are absolute links of the service root they came
    from; with another graph_url they are not followed (the token must not
    go elsewhere): the folders are read again, without an error."""
    with Emulator("--contacts", "12", "--folders", "2") as emu:
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            before = {rel: os.stat(m.root / rel).st_ino for rel in vcf_files(m.root)}
        other = emu.url.replace("127.0.0.1", "localhost")
        with Mount(emu, tmp_path, graph_url=other + "/v1.0", auth_url=other) as m:
            first = m.last_sync()
            wait_until(lambda: m.last_sync() not in ("", first)
                       and "delta round" not in m.log_text(), timeout=30,
                       what="a delta round against the other graph_url")
            assert "refusing to follow" not in m.log_text(), m.log_text()
            assert {rel: os.stat(m.root / rel).st_ino for rel in vcf_files(m.root)} == before


def test_a_card_read_with_repairs_is_saved_and_each_repair_is_in_errors(tmp_path):
    """A card other readers open but that breaks the RFC (here: a group on
    BEGIN and END, a name without ':') is saved like any other, and
    .contactfs/errors names each repair with its line; the file then shows
    the strict card the server's contact makes."""
    with Emulator("--contacts", "0") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        p = m.root / "Repaired Rita.vcf"
        p.write_bytes(b"X.BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Repaired Rita\r\nN\r\n"
                      b"EMAIL:rita@example.org\r\nX.END:VCARD\r\n")
        m.wait_synced()
        (c,) = server_contacts(emu)
        assert c["displayName"] == "Repaired Rita"
        assert [e["address"] for e in c["emailAddresses"]] == ["rita@example.org"]
        errors = m.errors()
        assert "Repaired Rita.vcf" in errors
        assert ("read with a repair: line 1: BEGIN:VCARD with a group or blanks; read as "
                "BEGIN:VCARD") in errors, errors
        assert "read with a repair: line 4: no ':' after \"N\"; read as an empty value" in errors
        assert "read with a repair: line 6: END:VCARD with a group" in errors
        text = p.read_bytes()
        assert text.startswith(b"BEGIN:VCARD\r\n") and b"X.END" not in text


def test_the_harness_wait_rounds_waits_for_rounds_that_read_the_server(tmp_path):
    """Mount.wait_rounds compared status's whole "last sync" line, whose
    "(N s ago)" changes every second: it returned after a second or two with
    no round at all, and the soak's quiesce points and 21 tests that wait for
    a round to bring a remote change waited for nothing. Now each round it
    counts read the folders' contacts from the server."""
    delta = "GET /me/contactFolders/{id}/contacts/delta"
    with Emulator("--contacts", "6") as emu:
        with Mount(emu, tmp_path, poll=5) as m:
            m.wait_synced()
            m.wait_rounds(1)
            before = emu.requests()["by_route"].get(delta, 0)
            m.wait_rounds(2)
            assert emu.requests()["by_route"].get(delta, 0) >= before + 2
