"""The mount command line: --help, --version, going to the background,
refusals (bad options, no mount point, not signed in, someone else's
database), contactfs status, mounting the way /etc/fstab does (mount(8) ->
mount.fuse3 -> contactfs), -o vcard_version, -o offline, -d and SIGTERM.

Every daemon a test starts is unmounted and killed in a finally block, even
when the test fails half-way.
"""
import os
import re
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, contactfs_bin
from emulator_proc import Emulator
from mount_proc import Mount, is_mounted, mount_options, need_fuse, vcf_files, wait_until

EX_USAGE = 64
EX_NOPERM = 77

# Every -o option of our own, as fs/mount.c's usage text spells it.
OWN_OPTIONS = ("graph_url=", "auth_url=", "user=", "token_cmd=", "client_id=", "tenant=",
               "cache_dir=", "poll=", "fsync_timeout=", "drain_timeout=", "vcard_version=",
               "offline")

VCARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Offline Person\r\nN:Person;Offline;;;\r\n"
         "EMAIL;TYPE=INTERNET:offline@example.com\r\nEND:VCARD\r\n")


# ---- helpers -------------------------------------------------------------------

def cfs():
    return str(contactfs_bin())


def private_env(tmp):
    """An environment whose config and cache directories are empty temporary
    ones: nothing of the real user's (tokens, caches) is seen or touched."""
    tmp = Path(tmp)
    for d in ("home", "config", "xdgcache"):
        (tmp / d).mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "config"),
               XDG_CACHE_HOME=str(tmp / "xdgcache"))
    return env


def run(args, env=None, timeout=60, **kw):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout, **kw)


def daemon_pids(mnt):
    """Processes named contactfs whose command line names mnt (a unique
    temporary path, so they are this test's). A child the daemon is just
    spawning (token_cmd) carries the same name and command line until it
    execs: processes whose parent is one of them are left out."""
    mnt = str(mnt)
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % d) as f:
                comm = f.read().strip()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if comm == "contactfs" and any(a.decode(errors="replace") == mnt for a in argv):
            try:
                with open("/proc/%s/stat" % d) as f:
                    out[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    return sorted(p for p, ppid in out.items() if ppid not in out)


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def cleanup(mnt, procs=()):
    """Whatever a test left behind: unmount lazily, kill its daemons."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    for pid in daemon_pids(mnt):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(daemon_pids(mnt), timeout=10)


def wait_mounted(mnt, proc, timeout=60, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("contactfs exited %d before mounting:\n%s"
                                 % (proc.returncode, log.read_text() if log else ""))
        if is_mounted(mnt):
            return
        time.sleep(0.05)
    raise AssertionError("contactfs did not mount within %ds" % timeout)


def status_lines(text):
    return text.splitlines()


def project_version():
    m = re.search(r"project\(contactfs\s+VERSION\s+([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    assert m, "no VERSION in CMakeLists.txt's project()"
    return m.group(1)


@pytest.fixture
def fuse():
    need_fuse()


# ---- --help, --version, no arguments ----------------------------------------------

def test_help_exits_0_and_lists_every_mount_option():
    r = run([cfs(), "--help"])
    assert r.returncode == 0, r.stderr
    for opt in OWN_OPTIONS:
        assert re.search(r"-o %s" % re.escape(opt), r.stdout), "--help does not list -o " + opt
    for flag in ("-f", "-d", "-s"):
        assert re.search(r"^\s+%s\s" % flag, r.stdout, re.M), "--help does not explain " + flag
    for sub in ("status", "convert", "export", "login", "logout"):
        assert re.search(r"contactfs %s\b" % sub, r.stdout), "--help has no usage line for " + sub
    assert "fusermount3 -u" in r.stdout


def test_help_after_options_still_prints_the_mount_usage_and_exits_0():
    r = run([cfs(), "-o", "poll=5", "--help"])
    assert r.returncode == 0, r.stderr
    assert "-o cache_dir=" in r.stdout


def test_version_exits_0_and_prints_the_project_version():
    r = run([cfs(), "--version"])
    assert r.returncode == 0, r.stderr
    assert re.match(r"contactfs %s\b" % re.escape(project_version()), r.stdout), r.stdout


def test_no_arguments_is_a_usage_error_with_the_usage_on_stderr():
    r = run([cfs()])
    assert r.returncode == EX_USAGE
    assert "usage: contactfs" in r.stderr
    assert r.stdout == ""


# ---- going to the background ---------------------------------------------------

def test_background_mount_exits_0_only_once_usable_and_fusermount_ends_the_daemon(tmp_path, fuse):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = private_env(tmp_path)
    with Emulator("--contacts", "5") as emu:
        try:
            r = run([cfs(), "-o", mount_options(emu, cache_dir=tmp_path / "cache", poll=2), mnt],
                    env=env)
            assert r.returncode == 0, "contactfs exited %d: %s" % (r.returncode, r.stderr)
            # Usable the moment the starting process is gone: no polling here.
            assert is_mounted(mnt), "contactfs exited 0 but nothing is mounted"
            assert isinstance(os.listdir(mnt), list)
            assert (mnt / ".contactfs" / "status").read_text().startswith("mailbox: ")
            pids = daemon_pids(mnt)
            assert len(pids) == 1, "expected one daemon, found %r" % pids
            # The daemon (started after the fork) syncs in the background.
            wait_until(lambda: len(vcf_files(mnt)) == 5, timeout=60, what="5 contacts")
            u = run(["fusermount3", "-u", mnt])
            assert u.returncode == 0, u.stderr
            assert wait_gone(pids, timeout=60), "the daemon is still running after the unmount"
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt)


# ---- refusals ------------------------------------------------------------------

@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "background"])
def test_unknown_option_fails_with_64_and_names_the_option(tmp_path, fuse, foreground):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Emulator("--contacts", "1") as emu:
        try:
            o = mount_options(emu, cache_dir=tmp_path / "cache") + ",no_such_option_x=1"
            r = run([cfs(), *(["-f"] if foreground else []), "-o", o, mnt],
                    env=private_env(tmp_path))
            assert r.returncode == EX_USAGE, "exit %d: %s" % (r.returncode, r.stderr)
            assert "no_such_option_x" in r.stderr
            assert not is_mounted(mnt)
            assert daemon_pids(mnt) == []
        finally:
            cleanup(mnt)


def test_unknown_option_is_a_usage_error_even_when_not_signed_in(tmp_path, fuse):
    """A mistyped option is the first thing to tell: not 'not signed in'."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = run([cfs(), "-f", "-o", "cache_dir=%s,no_such_option_y=1" % (tmp_path / "cache"), mnt],
                env=private_env(tmp_path))
        assert r.returncode == EX_USAGE, "exit %d: %s" % (r.returncode, r.stderr)
        assert "no_such_option_y" in r.stderr
        assert not is_mounted(mnt)
    finally:
        cleanup(mnt)


@pytest.mark.parametrize("opt,value", [("vcard_version", "2.1"), ("poll", "-3")])
def test_bad_option_value_fails_with_64_and_names_the_option(tmp_path, fuse, opt, value):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Emulator("--contacts", "1") as emu:
        try:
            o = mount_options(emu, cache_dir=tmp_path / "cache", **{opt: value})
            r = run([cfs(), "-f", "-o", o, mnt], env=private_env(tmp_path))
            assert r.returncode == EX_USAGE, "exit %d: %s" % (r.returncode, r.stderr)
            assert opt in r.stderr
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt)


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "background"])
def test_missing_mount_point_fails_nonzero_with_a_message_naming_it(tmp_path, fuse, foreground):
    mnt = tmp_path / "does-not-exist"
    with Emulator("--contacts", "1") as emu:
        try:
            r = run([cfs(), *(["-f"] if foreground else []), "-o",
                     mount_options(emu, cache_dir=tmp_path / "cache"), mnt],
                    env=private_env(tmp_path))
            assert r.returncode != 0
            assert str(mnt) in r.stderr, r.stderr
            assert "No such file or directory" in r.stderr, r.stderr
            assert not mnt.exists(), "contactfs created the mount point"
            assert daemon_pids(mnt) == []
        finally:
            cleanup(mnt)


@pytest.mark.parametrize("user", [None, "someone@contoso.example"])
def test_without_token_or_token_cmd_fails_77_saying_how_to_sign_in(tmp_path, fuse, user):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = private_env(tmp_path)  # an empty XDG_CONFIG_HOME: no stored token
    o = "graph_url=http://127.0.0.1:9/v1.0,auth_url=http://127.0.0.1:9,cache_dir=%s" \
        % (tmp_path / "cache")
    if user:
        o += ",user=" + user
    try:
        r = run([cfs(), "-o", o, mnt], env=env)
        assert r.returncode == EX_NOPERM, "exit %d: %s" % (r.returncode, r.stderr)
        assert "contactfs login --client-id" in r.stderr, r.stderr
        assert "token_cmd" in r.stderr, r.stderr
        if user:
            assert "-o user=" + user in r.stderr, r.stderr
        assert not is_mounted(mnt)
        assert daemon_pids(mnt) == []
        assert os.listdir(env["XDG_CONFIG_HOME"]) == [], "a refused mount wrote config"
    finally:
        cleanup(mnt)


def test_cache_dir_holding_another_programs_sqlite_db_is_refused_and_left_alone(tmp_path, fuse):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    db = cache / "cache.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE recipes(name TEXT, minutes INTEGER)")
    con.execute("INSERT INTO recipes VALUES('pancakes', 20)")
    con.commit()
    con.close()
    os.chmod(db, 0o644)
    before = db.read_bytes()
    before_names = sorted(os.listdir(cache))
    with Emulator("--contacts", "1") as emu:
        proc = None
        try:
            r = run([cfs(), "-f", "-o", mount_options(emu, cache_dir=cache), mnt],
                    env=private_env(tmp_path))
            assert r.returncode != 0, "contactfs mounted over another program's database"
            assert str(db) in r.stderr, r.stderr
            assert "not a contactfs cache" in r.stderr, r.stderr
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt, [proc])
    assert db.read_bytes() == before, "the foreign database was modified"
    assert sorted(os.listdir(cache)) == before_names, "files appeared beside the foreign database"
    assert os.stat(db).st_mode & 0o777 == 0o644, "the foreign database's mode was changed"
    con = sqlite3.connect(db)
    assert con.execute("SELECT name, minutes FROM recipes").fetchall() == [("pancakes", 20)]
    con.close()


# ---- contactfs status ------------------------------------------------------------

def _assert_status_block(lines, mnt, contacts):
    """lines[0] is the mount point; the state lines follow, indented."""
    assert lines[0] == str(mnt), lines
    body = lines[1:]
    assert all(line.startswith("  ") for line in body), body
    keys = {}
    for line in body:
        if ": " in line and not line.startswith("    "):
            k, v = line.strip().split(": ", 1)
            keys[k] = v
    assert keys.get("mailbox") == "me", body
    assert keys.get("state", "").startswith("online"), body
    assert keys.get("contacts") == str(contacts), body
    assert keys.get("pending changes", "").startswith("0"), body
    assert "  last errors:" in body, body
    i = body.index("  last errors:")
    assert body[i + 1:i + 2] == ["    none"], body


def test_status_with_mount_point_prints_it_and_its_state_lines(tmp_path, fuse):
    with Emulator("--contacts", "5") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        r = run([cfs(), "status", m.root])
        assert r.returncode == 0, r.stderr
        _assert_status_block(status_lines(r.stdout), m.root, 5)


def test_status_without_argument_finds_the_mount_even_with_a_space_in_its_path(tmp_path, fuse):
    root = tmp_path / "my contacts"
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path, root=root) as m:
        m.wait_synced()
        r = run([cfs(), "status"])
        lines = status_lines(r.stdout)
        assert str(root) in lines, "contactfs status did not list %s:\n%s%s" \
            % (root, r.stdout, r.stderr)
        i = lines.index(str(root))
        block = [lines[i]]
        for line in lines[i + 1:]:
            if not line.startswith("  "):
                break
            block.append(line)
        _assert_status_block(block, root, 3)
        # Other people's broken mounts may make it non-zero; never ours.
        if r.returncode != 0:
            assert str(root) not in r.stderr, r.stderr
            assert r.stderr.strip(), "non-zero exit without a message"


def test_status_of_a_directory_that_is_not_a_mount_fails_clearly(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    for target in ("/tmp", str(d)):
        r = run([cfs(), "status", target])
        assert r.returncode != 0, target
        assert r.stdout == "", r.stdout
        assert "%s: not a contactfs mount" % target in r.stderr, r.stderr


# ---- the /etc/fstab path ------------------------------------------------------------

def test_mount_fuse3_helper_mounts_and_fusermount_unmounts(tmp_path, fuse):
    """What mount(8) runs for an fstab line of type fuse.contactfs:
    mount.fuse3 SOURCE MOUNTPOINT -t contactfs -o OPTIONS, which runs
    `contactfs SOURCE MOUNTPOINT -o OPTIONS,...` through /bin/sh and PATH."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "contactfs").symlink_to(contactfs_bin())
    env = private_env(tmp_path)
    env["PATH"] = "%s:%s" % (bindir, env.get("PATH", "/usr/bin:/bin"))
    with Emulator("--contacts", "4") as emu:
        try:
            o = mount_options(emu, cache_dir=tmp_path / "cache", poll=2)
            r = run(["mount.fuse3", "contactfs", mnt, "-t", "contactfs", "-o", o], env=env)
            assert r.returncode == 0, "mount.fuse3 exited %d: %s" % (r.returncode, r.stderr)
            assert is_mounted(mnt)
            fstype, source = mount_type(mnt)
            assert (fstype, source) == ("fuse.contactfs", "contactfs")
            wait_until(lambda: len(vcf_files(mnt)) == 4, timeout=60, what="4 contacts")
            pids = daemon_pids(mnt)
            assert len(pids) == 1, pids
            u = run(["fusermount3", "-u", mnt])
            assert u.returncode == 0, u.stderr
            assert wait_gone(pids), "the daemon is still running after the unmount"
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt)


def mount_type(mnt):
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), pre.split(" ")[4])
            if mp == mnt:
                fields = post.split(" ")
                return fields[0], fields[1]
    return None, None


# Shell: wait up to a minute for the processes in $pids to exit (a zombie
# counts as gone); prints daemon_gone=yes or no and leaves it in $gone.
WAIT_GONE_SCRIPT = textwrap.dedent(r"""
    gone=no
    for i in $(seq 600); do
        left=""
        for p in $pids; do
            [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null && left="$left $p"
        done
        [ -z "$left" ] && { gone=yes; break; }
        sleep 0.1
    done
    echo "daemon_gone=$gone"
""")


# mount(8) gives the helper no PATH (/bin/sh falls back to its default,
# /usr/local/bin among it), so in a private mount namespace /usr/local/bin
# is replaced by a directory holding only our contactfs.
FSTAB_SCRIPT = textwrap.dedent(r"""
    set -u
    mount --bind "$BIN" /usr/local/bin || { echo "setup=failed"; exit 90; }
    if [ -n "${FSTAB:-}" ]; then
        mount -T "$FSTAB" "$MNT" 2>"$TMP/mount.err"
    else
        mount -t fuse.contactfs -o "$OPTS" contactfs "$MNT" 2>"$TMP/mount.err"
    fi
    echo "mount_rc=$?"
    awk -v m="$MNT" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") print "type=" $(i+1) " " $(i+2) }' \
        /proc/self/mountinfo
    n=0
    for i in $(seq 600); do
        n=$(ls -1 "$MNT" 2>/dev/null | grep -c '\.vcf$')
        [ "$n" -ge "$WANT" ] && break
        sleep 0.1
    done
    echo "files=$n"
    "$CONTACTFS" status "$MNT" >"$TMP/status.out" 2>&1
    echo "status_rc=$?"
    pids=""
    for p in $(pgrep -x contactfs); do
        if tr '\0' '\n' </proc/$p/cmdline 2>/dev/null | grep -qxF "$MNT"; then pids="$pids $p"; fi
    done
    echo "pids=$pids"
    umount "$MNT" 2>"$TMP/umount.err"
    echo "umount_rc=$?"
""") + WAIT_GONE_SCRIPT + textwrap.dedent(r"""
    awk -v m="$MNT" '$5 == m { found = 1 } END { print "still_mounted=" (found ? "yes" : "no") }' \
        /proc/self/mountinfo
    if [ "$gone" = no ]; then umount -l "$MNT" 2>/dev/null; kill -9 $pids 2>/dev/null; fi
""")


@pytest.mark.parametrize("how", ["mount-t", "fstab-file"])
def test_fstab_style_mount_of_type_fuse_contactfs_mounts_and_umount_unmounts(tmp_path, fuse, how):
    """mount(8) -> mount.fuse3 -> contactfs, from the command line
    (mount -t fuse.contactfs -o ...) and from an fstab file (mount -T)."""
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("unshare -m is not permitted here: the mount(8) path needs a private "
                    "mount namespace")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "contactfs").symlink_to(contactfs_bin())
    env = private_env(tmp_path)
    with Emulator("--contacts", "3") as emu:
        # The options an fstab line would carry, noauto and user included.
        opts = "noauto,user," + mount_options(emu, cache_dir=tmp_path / "cache", poll=2)
        env.update(BIN=str(bindir), OPTS=opts, MNT=str(mnt), TMP=str(tmp_path), WANT="3",
                   CONTACTFS=cfs())
        if how == "fstab-file":
            # fstab spells a space in a field \040 (token_cmd=echo TOKEN).
            fstab = tmp_path / "fstab"
            fstab.write_text("contactfs %s fuse.contactfs %s 0 0\n"
                             % (mnt, opts.replace(" ", "\\040")))
            env["FSTAB"] = str(fstab)
        try:
            r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", FSTAB_SCRIPT],
                    env=env, timeout=300)
            out = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            why = "script said:\n%s\nstderr: %s\nmount: %s" % (
                r.stdout, r.stderr, (tmp_path / "mount.err").read_text()
                if (tmp_path / "mount.err").exists() else "")
            assert out.get("mount_rc") == "0", why
            assert out.get("type") == "fuse.contactfs contactfs", why
            assert out.get("files") == "3", why
            assert out.get("status_rc") == "0", why
            assert (tmp_path / "status.out").read_text().startswith(str(mnt) + "\n"), why
            assert len(out.get("pids", "").split()) == 1, why
            assert out.get("umount_rc") == "0", why + (tmp_path / "umount.err").read_text()
            assert out.get("daemon_gone") == "yes", why
            assert out.get("still_mounted") == "no", why
        finally:
            cleanup(mnt)


# ---- options that change what is mounted ------------------------------------------

def test_vcard_version_4_renders_every_file_as_version_4(tmp_path, fuse):
    with Emulator("--contacts", "6", "--folders", "1") as emu, \
            Mount(emu, tmp_path, vcard_version="4.0") as m:
        m.wait_synced()
        files = vcf_files(m.root)
        assert len(files) == 6
        for rel in files:
            data = (m.root / rel).read_bytes()
            assert b"\r\nVERSION:4.0\r\n" in data, rel
            assert b"VERSION:3.0" not in data, rel


def test_default_vcard_version_is_3_0(tmp_path, fuse):
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        files = vcf_files(m.root)
        assert len(files) == 3
        for rel in files:
            assert b"\r\nVERSION:3.0\r\n" in (m.root / rel).read_bytes(), rel


def test_offline_with_empty_cache_and_no_server_mounts_and_queues_writes(tmp_path, fuse):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    env = private_env(tmp_path)  # not signed in either: offline needs no token
    # Port 9 (discard) on loopback: nothing answers, and nothing should ask.
    o = "offline,graph_url=http://127.0.0.1:9/v1.0,auth_url=http://127.0.0.1:9,cache_dir=%s" \
        % (tmp_path / "cache")
    proc = None
    try:
        with open(log, "wb") as lf:
            proc = subprocess.Popen([cfs(), "-f", "-o", o, str(mnt)], stdout=lf,
                                    stderr=subprocess.STDOUT, env=env)
        wait_mounted(mnt, proc, log=log)
        assert os.listdir(mnt) == []
        status = (mnt / ".contactfs" / "status").read_text()
        assert re.search(r"^state: offline", status, re.M), status
        (mnt / "Offline Person.vcf").write_text(VCARD, newline="")
        status = (mnt / ".contactfs" / "status").read_text()
        assert re.search(r"^pending changes: 1\b", status, re.M), status
        r = run([cfs(), "status", mnt])
        assert r.returncode == 0, r.stderr
        assert "  state: offline" in r.stdout, r.stdout
        u = run(["fusermount3", "-u", mnt])
        assert u.returncode == 0, u.stderr
        rc = proc.wait(timeout=60)
        assert rc == 0, "exit %d:\n%s" % (rc, log.read_text())
        assert not is_mounted(mnt)
    finally:
        cleanup(mnt, [proc])


def test_debug_flag_logs_debug_lines_and_never_the_token(tmp_path, fuse):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    token = "tok-Xq7RzPL2-never-logged"
    proc = None
    with Emulator("--contacts", "2", token=token) as emu:
        try:
            o = mount_options(emu, cache_dir=tmp_path / "cache", poll=2)
            with open(log, "wb") as lf:
                # -d alone (no -f): it implies the foreground.
                proc = subprocess.Popen([cfs(), "-d", "-o", o, str(mnt)], stdout=lf,
                                        stderr=subprocess.STDOUT, env=private_env(tmp_path))
            wait_mounted(mnt, proc, log=log)
            wait_until(lambda: len(vcf_files(mnt)) == 2, timeout=60, what="2 contacts")
            wait_until(lambda: re.search(r"^contactfs: debug: ", log.read_text(errors="replace"),
                                         re.M), timeout=30, what="a debug line in the log")
            u = run(["fusermount3", "-u", mnt])
            assert u.returncode == 0, u.stderr
            rc = proc.wait(timeout=60)
            text = log.read_text(errors="replace")
            assert rc == 0, "exit %d:\n%s" % (rc, text[-4000:])
            assert re.search(r"^contactfs: debug: http > GET /v1.0/", text, re.M), text[-4000:]
            assert token not in text, "the access token is in the debug log"
        finally:
            cleanup(mnt, [proc])


def test_without_debug_flag_no_debug_lines_are_logged(tmp_path, fuse):
    with Emulator("--contacts", "2") as emu:
        m = Mount(emu, tmp_path)
        with m:
            m.wait_synced()
        assert "contactfs: debug:" not in m.log_text()


def test_single_threaded_mount_serves_files(tmp_path, fuse):
    with Emulator("--contacts", "3") as emu, Mount(emu, tmp_path, extra_args=["-s"]) as m:
        m.wait_synced()
        files = vcf_files(m.root)
        assert len(files) == 3
        assert (m.root / files[0]).read_bytes().startswith(b"BEGIN:VCARD\r\n")


# ---- signals -------------------------------------------------------------------

def start_foreground(tmp_path, emu, mnt, sigint):
    """contactfs -f started with SIGINT as sigint (SIG_DFL: a terminal's
    foreground job; SIG_IGN: what a script's background job inherits, and
    what this suite itself inherits when it runs as one)."""
    log = tmp_path / "daemon.log"
    o = mount_options(emu, cache_dir=tmp_path / "cache", poll=2)
    with open(log, "wb") as lf:
        proc = subprocess.Popen([cfs(), "-f", "-o", o, str(mnt)], stdout=lf,
                                stderr=subprocess.STDOUT, env=private_env(tmp_path),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    wait_mounted(mnt, proc, log=log)
    wait_until(lambda: len(vcf_files(mnt)) == 3, timeout=60, what="3 contacts")
    return proc, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_foreground_daemon_unmounts_and_exits_0(tmp_path, fuse, sig):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = None
    with Emulator("--contacts", "3") as emu:
        try:
            proc, log = start_foreground(tmp_path, emu, mnt, signal.SIG_DFL)
            proc.send_signal(sig)
            rc = proc.wait(timeout=60)
            assert rc == 0, "exit %d:\n%s" % (rc, log.read_text())
            assert not is_mounted(mnt), "still mounted after the daemon exited"
            assert "error:" not in log.read_text(), log.read_text()
        finally:
            cleanup(mnt, [proc])


def test_a_daemon_started_with_sigint_ignored_keeps_it_ignored_and_stops_on_sigterm(tmp_path, fuse):
    # A background job of a script starts with SIGINT ignored, so that the
    # terminal's ^C is not for it; libfuse then leaves SIGINT alone, and so
    # do we. SIGTERM (systemd, kill) still unmounts.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = None
    with Emulator("--contacts", "3") as emu:
        try:
            proc, log = start_foreground(tmp_path, emu, mnt, signal.SIG_IGN)
            proc.send_signal(signal.SIGINT)
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
            assert is_mounted(mnt) and len(vcf_files(mnt)) == 3
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()
            assert not is_mounted(mnt), "still mounted after the daemon exited"
        finally:
            cleanup(mnt, [proc])


def test_sigterm_to_background_daemon_unmounts(tmp_path, fuse):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Emulator("--contacts", "2") as emu:
        try:
            r = run([cfs(), "-o", mount_options(emu, cache_dir=tmp_path / "cache", poll=2), mnt],
                    env=private_env(tmp_path))
            assert r.returncode == 0, r.stderr
            pids = daemon_pids(mnt)
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGTERM)
            assert wait_gone(pids), "the daemon ignored SIGTERM"
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt)
