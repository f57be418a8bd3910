"""A user who is not root, and whose environment does not name their home.

mount(8) runs the helper of a `user` line of /etc/fstab without HOME, and su
or sudo may leave root's (HOME=/root). contactfs must still find the token
and the cache in the user's own home, from the password database, and never
relative to the working directory. Each test makes a user with useradd (the
tests run as root) and removes it afterwards.
"""
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import contactfs_bin
from emulator_proc import Emulator
from mount_proc import is_mounted, need_fuse, wait_until
from test_mount_cli import WAIT_GONE_SCRIPT, cleanup


def run(args, timeout=120, **kw):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, **kw)


class User:
    """A fresh user whose home is base/home (0700), with a copy of the
    contactfs under test in base/bin, which the user can run. base is
    root's and not writable by the user: a path relative to it fails."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="contactfs-user-"))
        os.chmod(self.base, 0o755)
        self.name = "cfs" + secrets.token_hex(4)
        self.home = self.base / "home"
        self.bin = self.base / "bin"
        self.bin.mkdir()
        shutil.copy2(contactfs_bin(), self.bin / "contactfs")
        os.chmod(self.bin / "contactfs", 0o755)
        r = run(["useradd", "--no-create-home", "--home-dir", self.home, "--shell", "/bin/sh",
                 "--user-group", self.name])
        assert r.returncode == 0, "useradd failed: %s" % r.stderr
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home.mkdir(mode=0o700)
        os.chown(self.home, self.uid, self.gid)
        self.mnt = self.base / "mnt"
        self.mnt.mkdir()
        os.chown(self.mnt, self.uid, self.gid)

    def cmd(self, *args, home="unset"):
        """args run as the user; HOME unset, or set to home. Nothing else
        of root's environment (XDG_*, the test's HOME) is passed on."""
        env = ["env", "-i", "PATH=/usr/bin:/bin"]
        if home != "unset":
            env.append("HOME=%s" % home)
        return ["runuser", "-u", self.name, "--", *env, *[str(a) for a in args]]

    def remove(self):
        cleanup(self.mnt)
        r = run(["userdel", self.name])
        assert r.returncode == 0, "userdel failed: %s" % r.stderr
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def user():
    need_fuse()
    if os.geteuid() != 0:
        pytest.skip("not root: useradd and runuser need root")
    for tool in ("useradd", "userdel", "runuser"):
        if not shutil.which(tool):
            pytest.skip("%s is missing (scripts/setup installs it)" % tool)
    u = User()
    try:
        yield u
    finally:
        u.remove()


def opts(emu):
    return "graph_url=%s/v1.0,auth_url=%s,poll=2" % (emu.url, emu.url)


def login(u, emu, home):
    emu.faults({"device_pending_polls": 0, "device_interval_s": 1})
    r = run(u.cmd(u.bin / "contactfs", "login", "--client-id", "cid", "-o",
                  "graph_url=%s/v1.0,auth_url=%s" % (emu.url, emu.url), home=home),
            cwd=u.base)
    assert r.returncode == 0, "login exited %d: %s" % (r.returncode, r.stderr)
    token = u.home / ".config" / "contactfs" / "me.token"
    assert token.is_file(), "no token in the user's home: %s" % r.stderr
    st = token.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (u.uid, 0o600)


def user_files(u):
    r = run(u.cmd("sh", "-c", 'ls -1 "$0"', u.mnt))
    return sorted(n for n in r.stdout.splitlines() if n.endswith(".vcf"))


# Run as root inside a private mount namespace, so that what it changes is
# seen by nobody else and goes with the namespace: /dev/fuse gets the mode a
# Debian system gives it (0666; a container may have 0600, and libfuse opens
# it as the user before it calls fusermount3); for MODE=fstab our fstab
# covers /etc/fstab and our contactfs /usr/local/bin (mount(8) gives the
# helper no PATH; /bin/sh's default has /usr/local/bin). Then the user mounts,
# reads a contact and unmounts.
SCRIPT = textwrap.dedent(r"""
    set -u
    if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
        mkdir "$TMP/dev" && mount -t tmpfs -o mode=0755 tmpfs "$TMP/dev" &&
            mknod -m 0666 "$TMP/dev/fuse" c 10 229 && mount --bind "$TMP/dev/fuse" /dev/fuse ||
            { echo "setup=failed"; exit 90; }
    fi
    as_user() { runuser -u "$USERNAME" -- env -i PATH=/usr/bin:/bin $USERHOME "$@"; }
    if [ "$MODE" = fstab ]; then
        mount --bind "$FSTAB" /etc/fstab && mount --bind "$BIN" /usr/local/bin ||
            { echo "setup=failed"; exit 90; }
        as_user mount "$MNT" 2>"$TMP/mount.err"
        echo "mount_rc=$?"
    else
        as_user "$BIN/contactfs" -f -o "$OPTS" "$MNT" >"$TMP/daemon.log" 2>&1 &
        daemon=$!
        for i in $(seq 600); do
            awk -v m="$MNT" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo &&
                break
            kill -0 $daemon 2>/dev/null || break
            sleep 0.1
        done
    fi
    n=0
    for i in $(seq 600); do
        n=$(as_user ls -1 "$MNT" 2>/dev/null | grep -c '\.vcf$')
        [ "$n" -ge 2 ] && break
        sleep 0.1
    done
    echo "files=$n"
    f=$(as_user ls -1 "$MNT" | grep '\.vcf$' | head -n 1)
    as_user cat "$MNT/$f" >"$TMP/card.vcf" 2>"$TMP/cat.err"
    echo "cat_rc=$?"
    pids=$(pgrep -u "$USERNAME" -x contactfs | tr '
' ' ')
    echo "pids=$pids"
    as_user fusermount3 -u "$MNT" 2>"$TMP/umount.err"
    echo "umount_rc=$?"
    if [ "$MODE" != fstab ]; then
        wait $daemon
        echo "daemon_rc=$?"
    fi
""") + WAIT_GONE_SCRIPT + textwrap.dedent(r"""
    if [ "$gone" = no ]; then umount -l "$MNT" 2>/dev/null; kill -9 $pids 2>/dev/null; fi
""")


def mount_as_user(u, emu, mode, home):
    """SCRIPT for user u; asserts that the user mounted, read a contact and
    unmounted, and that the daemon exited (0 where its status is known)."""
    if run(["unshare", "-m", "--propagation", "private", "true"]).returncode != 0:
        pytest.skip("unshare -m is not permitted here: the test needs a private mount namespace")
    env = dict(os.environ, MODE=mode, BIN=str(u.bin), MNT=str(u.mnt), TMP=str(u.base),
               USERNAME=u.name, OPTS=opts(emu),
               USERHOME="" if home == "unset" else "HOME=" + home)
    if mode == "fstab":
        fstab = u.base / "fstab"
        # No token_cmd and no cache_dir: the token and the cache are found
        # in the user's home.
        fstab.write_text("contactfs %s fuse.contactfs noauto,user,%s 0 0\n" % (u.mnt, opts(emu)))
        os.chmod(fstab, 0o644)
        env["FSTAB"] = str(fstab)
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT], env=env,
            timeout=300, cwd=u.base)
    out = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def said(name):
        p = u.base / name
        return p.read_text(errors="replace") if p.exists() else ""
    why = "script said:\n%s\nstderr: %s\nmount: %s\ndaemon: %s\ncat: %s\numount: %s" % (
        r.stdout, r.stderr, said("mount.err"), said("daemon.log"), said("cat.err"),
        said("umount.err"))
    if mode == "fstab":
        assert out.get("mount_rc") == "0", why
    assert out.get("files") == "2", why
    assert out.get("cat_rc") == "0" and said("card.vcf").startswith("BEGIN:VCARD"), why
    assert len(out.get("pids", "").split()) == 1, why
    assert out.get("umount_rc") == "0", why
    if mode != "fstab":
        assert out.get("daemon_rc") == "0", why
    assert out.get("daemon_gone") == "yes", why
    cache = u.home / ".cache" / "contactfs" / "me" / "cache.db"
    assert cache.is_file(), "the cache is not in the user's home: " + why
    assert cache.stat().st_uid == u.uid
    # Nothing relative to the working directory (root's, not writable by
    # the user) was attempted either.
    assert not (u.base / ".config").exists() and not (u.base / ".cache").exists()


@pytest.mark.parametrize("home", ["unset", "/root"])
def test_login_and_mount_as_a_user_find_the_token_and_cache_in_the_users_home(user, home):
    with Emulator("--contacts", "2") as emu:
        login(user, emu, home)
        mount_as_user(user, emu, "direct", home)


def test_fstab_user_mount_by_the_user_reads_a_contact_with_the_users_token_and_cache(user):
    with Emulator("--contacts", "2") as emu:
        login(user, emu, "unset")
        mount_as_user(user, emu, "fstab", "/root")


def test_home_unset_and_no_entry_in_the_password_database_is_refused_never_relative(tmp_path):
    # A uid no user has: setpriv runs contactfs as it, with no HOME.
    uid = next(n for n in range(60001, 65000) if not any(p.pw_uid == n for p in pwd.getpwall()))
    os.chmod(tmp_path, 0o777)
    # A copy it can run: the build tree may sit where only root can go
    # (a clone in /root).
    bindir = Path(tempfile.mkdtemp(prefix="contactfs-bin-"))
    try:
        os.chmod(bindir, 0o755)
        shutil.copy2(contactfs_bin(), bindir / "contactfs")
        os.chmod(bindir / "contactfs", 0o755)
        r = run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                 "env", "-i", "PATH=/usr/bin:/bin", bindir / "contactfs", "logout"], cwd=tmp_path)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    assert r.returncode == 64, "exit %d: %s" % (r.returncode, r.stderr)
    assert "no home directory: HOME is not set and uid %d has no home" % uid in r.stderr, \
        r.stderr
    assert os.listdir(tmp_path) == [], "something was written relative to the working directory"
