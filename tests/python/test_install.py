"""contactfs as installed: `cmake --install` into a temporary prefix, the
installed binary mounted the way mount(8) does it, the installed manual and
bash completion; the Debian package (scripts/package, dpkg-deb, lintian);
the systemd user unit, checked by systemd-analyze and run by hand the way
systemd runs it; and one version everywhere.

The installed files come from the build of the binary under test
($CONTACTFS_BIN's directory), so the sanitizer pass of scripts/test installs
its own build.
"""
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, contactfs_bin
from emulator_proc import Emulator
from mount_proc import is_mounted, mailbox, mount_options, need_fuse, vcf_files, wait_until

# What cmake --install puts under the prefix, and nothing else.
INSTALLED = (
    "bin/contactfs",
    "lib/systemd/user/contactfs@.service",
    "share/bash-completion/completions/contactfs",
    "share/doc/contactfs/design.md",
    "share/man/man1/contactfs.1",
)

# lintian warnings the package keeps, each with the reason (none today; a
# new one fails test_package_* until it is fixed or listed here).
KEPT_LINTIAN_WARNINGS = {}


def cmake_version():
    m = re.search(r"^project\(contactfs VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text(),
                  re.M)
    assert m, "CMakeLists.txt has no project(contactfs VERSION ...)"
    return m.group(1)


def run(args, env=None, timeout=300, **kw):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout, **kw)


def private_env(tmp):
    """HOME, XDG_CONFIG_HOME and XDG_CACHE_HOME in tmp: nothing of the real
    user's is seen or touched."""
    tmp = Path(tmp)
    home = tmp / "home"
    for d in (home, home / ".config", home / ".cache"):
        d.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                XDG_CACHE_HOME=str(home / ".cache"))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """cmake --install of the build under test into a fresh prefix."""
    build = contactfs_bin().parent
    if not (build / "CMakeCache.txt").is_file():
        pytest.fail("%s is not a CMake build directory: cannot test cmake --install" % build)
    p = tmp_path_factory.mktemp("prefix")
    r = run(["cmake", "--install", build, "--prefix", p])
    assert r.returncode == 0, "cmake --install failed:\n%s%s" % (r.stdout, r.stderr)
    return p


# ---- one version ----------------------------------------------------------------------

def test_version_is_the_same_in_cmake_changelog_man_page_and_contactfs_version():
    v = cmake_version()
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"contactfs \(([^)]+)\) ", first)
    assert m, "debian/changelog starts with %r" % first
    assert m.group(1) == v, "debian/changelog says %s, CMakeLists.txt %s" % (m.group(1), v)
    th = next(line for line in (REPO / "docs" / "contactfs.1").read_text().splitlines()
              if line.startswith(".TH "))
    assert '"contactfs %s"' % v in th, "docs/contactfs.1: %s (CMakeLists.txt: %s)" % (th, v)
    r = run([contactfs_bin(), "--version"])
    assert (r.returncode, r.stdout) == (0, "contactfs %s\n" % v), r


# ---- cmake --install ------------------------------------------------------------------

def test_cmake_install_puts_the_command_manual_completion_unit_and_design_under_the_prefix(prefix):
    files = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if not p.is_dir())
    assert files == sorted(INSTALLED)
    assert os.access(prefix / "bin" / "contactfs", os.X_OK)
    r = run([prefix / "bin" / "contactfs", "--version"])
    assert r.stdout == "contactfs %s\n" % cmake_version(), r
    unit = (prefix / "lib/systemd/user/contactfs@.service").read_text()
    # The unit names the binary installed beside it, not the default prefix's.
    assert re.search(r"^ExecStart=%s " % re.escape(str(prefix / "bin" / "contactfs")), unit, re.M), \
        unit


def test_man_finds_and_renders_the_installed_manual(prefix):
    if not shutil.which("man"):
        pytest.skip("man (man-db) is not installed: scripts/setup installs it")
    env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="100", LC_ALL="C.UTF-8")
    env.pop("MANPATH", None)
    r = run(["man", "-M", prefix / "share" / "man", "contactfs"], env=env)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert re.search(r"^NAME\n\s+contactfs - mount a Microsoft Graph mailbox's contacts", text,
                     re.M), text[:500]
    for section in ("SYNOPSIS", "OPTIONS", "FILES", "MOUNTING AT LOGIN", "SEE ALSO"):
        assert re.search(r"^%s$" % section, text, re.M), section
    assert "followup" in text
    # The manual says where the design decisions are; they are there.
    assert "design.md" in text
    assert (prefix / "share/doc/contactfs/design.md").read_text().startswith("# contactfs")


def completions(prefix, line):
    """What the installed completion offers for `line` (cursor at its end),
    as bash would show it: the words in COMPREPLY."""
    script = textwrap.dedent("""\
        source "$1" || exit 3
        complete -p contactfs || exit 4
        COMP_LINE=$2 COMP_POINT=${#2}
        COMPREPLY=()
        _contactfs
        printf '%s\\n' "${COMPREPLY[@]}"
        """)
    r = run(["bash", "--norc", "--noprofile", "-c", script, "bash",
             prefix / "share/bash-completion/completions/contactfs", line])
    assert r.returncode == 0, r
    out = r.stdout.splitlines()
    assert out[0] == "complete -F _contactfs contactfs", out
    return sorted(w for w in out[1:] if w)


def test_bash_completion_completes_commands_and_o_options(prefix):
    assert completions(prefix, "contactfs -o fol") == ["followup"]
    assert completions(prefix, "contactfs -o poll=3,fol") == ["3,followup"]
    assert completions(prefix, "contactfs -o vcard_version=") == ["3.0", "4.0"]
    assert completions(prefix, "contactfs st") == ["status"]
    assert completions(prefix, "contactfs convert --to ") == ["json", "vcard"]
    assert completions(prefix, "contactfs login --tenant co") == ["common", "consumers"]
    assert completions(prefix, "contactfs export -o us") == ["user="]


def test_bash_completion_knows_every_command_and_mount_option_the_source_has(prefix):
    main_c = (REPO / "cli" / "main.c").read_text()
    commands = set(re.findall(r'!strcmp\(argv\[1\], "([a-z]+)"\)', main_c))
    assert {"status", "convert", "export", "login", "logout"} <= commands, commands
    offered = completions(prefix, "contactfs ")
    assert commands <= set(offered), commands - set(offered)
    mount_c = (REPO / "fs" / "mount.c").read_text()
    opts = set(re.findall(r'OPT\("([a-z_]+=?)', mount_c))
    opts |= set(re.findall(r'FUSE_OPT_KEY\("([a-z_]+=)"', mount_c))
    assert {"followup", "offline", "graph_url=", "drain_timeout="} <= opts, opts
    offered = set(completions(prefix, "contactfs -o "))
    assert opts <= offered, "not completed: %s" % sorted(opts - offered)


# ---- the installed binary through mount(8) ------------------------------------------------

# mount(8) gives mount.fuse3 no PATH, and the /bin/sh it runs contactfs with
# falls back to its default, /usr/local/bin among it: in a private mount
# namespace, /usr/local/bin is the prefix's bin, as after a plain
# cmake --install. The daemon goes to the background; its pid is printed.
MOUNT_SCRIPT = textwrap.dedent(r"""
    set -u
    mount --bind "$PREFIX/bin" /usr/local/bin || { echo "setup=failed"; exit 90; }
    mount -t fuse.contactfs -o "$OPTS" contactfs "$MNT" 2>"$TMP/mount.err"
    echo "mount_rc=$?"
    awk -v m="$MNT" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") print "type=" $(i+1) }' \
        /proc/self/mountinfo
    n=0
    for i in $(seq 600); do
        n=$(ls -1 "$MNT" 2>/dev/null | grep -c '\.vcf$')
        [ "$n" -ge "$WANT" ] && break
        sleep 0.1
    done
    echo "files=$n"
    first=$(ls -1 "$MNT" | grep '\.vcf$' | head -n 1)
    head -n 1 "$MNT/$first" | tr -d '\r' | sed 's/^/card=/'
    for p in $(pgrep -x contactfs); do
        if tr '\0' '\n' </proc/$p/cmdline 2>/dev/null | grep -qxF "$MNT"; then
            echo "pid=$p"
            echo "exe_inode=$(stat -L -c %i /proc/$p/exe)"
        fi
    done
    umount "$MNT" 2>"$TMP/umount.err"
    echo "umount_rc=$?"
""")


def daemons_of(mnt):
    """Pids of the contactfs processes whose command line names mnt."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"contactfs") and str(mnt).encode() in argv:
            out.append(int(d))
    return out


def test_installed_binary_mounts_through_mount_t_fuse_contactfs_and_exits_0(prefix, tmp_path):
    need_fuse()
    if run(["unshare", "-m", "--propagation", "private", "true"]).returncode != 0:
        pytest.skip("unshare -m is not permitted here: the mount(8) path needs a private "
                    "mount namespace")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = private_env(tmp_path)
    env["PATH"] = "%s:%s" % (prefix / "bin", env.get("PATH", "/usr/bin:/bin"))
    # The daemon outlives the script; as the subreaper this test collects
    # its exit status.
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    pid = None
    try:
        with Emulator("--contacts", "3") as emu:
            opts = mount_options(emu, cache_dir=tmp_path / "cache", poll=2)
            env.update(PREFIX=str(prefix), OPTS=opts, MNT=str(mnt), TMP=str(tmp_path), WANT="3")
            r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", MOUNT_SCRIPT],
                    env=env)
            out = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            pid = int(out["pid"]) if out.get("pid", "").isdigit() else None
            why = "script said:\n%s\nstderr: %s\nmount: %s" % (
                r.stdout, r.stderr, (tmp_path / "mount.err").read_text()
                if (tmp_path / "mount.err").exists() else "")
            assert out.get("mount_rc") == "0", why
            assert out.get("type") == "fuse.contactfs", why
            assert out.get("files") == "3", why
            assert out.get("card") == "BEGIN:VCARD", why
            assert pid is not None, why
            assert out.get("exe_inode") == str(os.stat(prefix / "bin" / "contactfs").st_ino), \
                "the daemon is not the installed binary: " + why
            assert out.get("umount_rc") == "0", why + (tmp_path / "umount.err").read_text()
            _, status = os.waitpid(pid, 0)
            pid = None
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
                "the daemon ended with wait status %#x" % status
    finally:
        # A daemon the script did not name or unmount (its mount lives in
        # the namespace it holds) is found by its command line and killed.
        left = [pid] if pid is not None else daemons_of(mnt)
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except OSError:
                pass
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    assert not is_mounted(mnt)


# ---- the Debian package ---------------------------------------------------------------

@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """scripts/package into a temporary directory; the .deb's path."""
    if not shutil.which("dpkg-buildpackage"):
        pytest.skip("dpkg-buildpackage is not installed (dpkg-dev): scripts/setup installs it")
    out = tmp_path_factory.mktemp("package")
    r = run([REPO / "scripts" / "package", out], timeout=900)
    assert r.returncode == 0, "scripts/package failed:\n%s%s" % (r.stdout, r.stderr)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("package: "), r.stdout
    path = Path(last[len("package: "):])
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert path == out / ("contactfs_%s_%s.deb" % (cmake_version(), arch)), last
    assert path.is_file()
    # The build ran in the copy, not in the checkout.
    assert not (REPO / "debian" / "contactfs").exists()
    assert not list(REPO.glob("obj-*")), list(REPO.glob("obj-*"))
    return path


def test_package_holds_the_installed_files_under_usr(deb):
    r = run(["dpkg-deb", "-c", deb])
    assert r.returncode == 0, r.stderr
    files = {line.split()[-1] for line in r.stdout.splitlines() if not line.startswith("d")}
    want = {"./usr/bin/contactfs", "./usr/lib/systemd/user/contactfs@.service",
            "./usr/share/bash-completion/completions/contactfs",
            "./usr/share/doc/contactfs/design.md.gz", "./usr/share/man/man1/contactfs.1.gz",
            "./usr/share/doc/contactfs/copyright", "./usr/share/doc/contactfs/changelog.gz"}
    assert files == want, "missing %s, unexpected %s" % (sorted(want - files),
                                                          sorted(files - want))


def test_package_depends_on_fuse3_and_the_libraries_it_links(deb):
    r = run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"])
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert fields["Package"] == "contactfs"
    assert fields["Version"] == cmake_version()
    deps = {d.strip().split(" ")[0] for d in fields["Depends"].split(",")}
    for want in ("fuse3", "libfuse3-3", "libcurl4", "libsqlite3-0", "libcjson1", "libical3",
                 "libssl3", "libc6"):
        assert want in deps, "Depends: %s (no %s)" % (fields["Depends"], want)


def test_package_unit_names_the_packaged_binary(deb, tmp_path):
    r = run(["dpkg-deb", "-x", deb, tmp_path / "root"])
    assert r.returncode == 0, r.stderr
    unit = (tmp_path / "root/usr/lib/systemd/user/contactfs@.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/contactfs ", unit, re.M), unit
    r = run([tmp_path / "root/usr/bin/contactfs", "--version"])
    assert r.stdout == "contactfs %s\n" % cmake_version(), r


def test_lintian_finds_no_error_and_no_warning_we_did_not_list(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed: scripts/setup installs it")
    r = run(["lintian", "--no-tag-display-limit", deb], timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EW]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "lintian:\n" + r.stdout
    warnings = [t for t in tags if t.startswith("W: ")
                and t.split()[2] not in KEPT_LINTIAN_WARNINGS]
    assert not warnings, "lintian warnings not in KEPT_LINTIAN_WARNINGS:\n" + r.stdout


# ---- the systemd user unit ------------------------------------------------------------

def test_systemd_analyze_verifies_the_installed_unit(prefix, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (systemd): scripts/setup installs it")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime),
               MANPATH=str(prefix / "share" / "man"))  # Documentation=man:contactfs(1)
    r = run(["systemd-analyze", "--user", "verify",
             prefix / "lib/systemd/user/contactfs@Contacts.service"], env=env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


class Unit:
    """The [Service] lines of a unit file, with the specifiers and
    environment variables systemd substitutes, for running its commands by
    hand."""

    def __init__(self, path, *, home, instance):
        self.lines = {}
        section = None
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            k, v = line.split("=", 1)
            self.lines.setdefault((section, k), []).append(v)
        self.spec = {"h": str(home), "I": instance, "i": instance.replace("/", "-"),
                     "E": str(Path(home) / ".config"), "%": "%"}
        self.env = {}
        for v in self.get("Environment"):
            k, val = self.subst(v).split("=", 1)
            self.env[k] = val
        for v in self.get("EnvironmentFile"):
            optional = v.startswith("-")
            f = Path(self.subst(v.lstrip("-")))
            if not f.exists() and optional:
                continue
            for line in f.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    k, val = line.split("=", 1)
                    self.env[k.strip()] = val.strip()

    def get(self, key):
        return self.lines.get(("[Service]", key), [])

    def subst(self, s):
        return re.sub(r"%(.)", lambda m: self.spec[m.group(1)], s)

    def commands(self, key):
        """The argv of each KEY= line, in order: specifiers replaced, ${VAR}
        one word, $VAR split at white space, $$ a dollar, a bare name looked
        up in PATH."""
        out = []
        for line in self.get(key):
            argv = []
            for word in shlex.split(self.subst(line.lstrip("-@+!"))):
                m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
                if m:
                    argv += self.env.get(m.group(1), "").split()
                    continue
                argv.append(re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                   lambda m: self.env.get(m.group(1), "") if m.group(1) else "$",
                                   word))
            if "/" not in argv[0]:
                argv[0] = shutil.which(argv[0]) or argv[0]
            out.append(argv)
        return out

    def command(self, key):
        """The argv of the one KEY= line."""
        (argv,) = self.commands(key)
        return argv

    def run_pre(self, env):
        """Every ExecStartPre, as systemd runs them: one failing (without a
        leading "-") fails the start."""
        for line, argv in zip(self.get("ExecStartPre"), self.commands("ExecStartPre")):
            r = run(argv, env=env)
            assert r.returncode == 0 or line.startswith("-"), \
                "ExecStartPre %s failed: %s" % (argv, r.stderr)


NEW_CARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Stopping Stella\r\nN:Stella;Stopping;;;\r\n"
            "EMAIL;TYPE=INTERNET:stella@example.com\r\nEND:VCARD\r\n")


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_unit_commands_run_by_hand_mount_and_send_a_pending_change_at_stop(prefix, tmp_path, busy):
    """ExecStartPre and ExecStart as systemd runs them for contactfs@Contacts;
    a contact written just before the stop; ExecStop, then the SIGTERM
    systemd sends to what is left after it. The daemon exits 0 within
    TimeoutStopSec and the contact is on the server. Busy: a shell has its
    working directory in the mount, so fusermount3 -u fails and the SIGTERM
    is what unmounts (lazily)."""
    need_fuse()
    env = private_env(tmp_path)
    home = Path(env["HOME"])
    unit_file = prefix / "lib/systemd/user/contactfs@.service"
    log_path = tmp_path / "journal.log"
    proc = holder = None
    mnt = home / "Contacts"
    with Emulator("--contacts", "3") as emu:
        # The instance's options, where the unit reads them.
        (home / ".config" / "contactfs").mkdir(parents=True)
        (home / ".config" / "contactfs" / "Contacts.env").write_text(
            "CONTACTFS_OPTIONS=%s\n" % mount_options(emu, cache_dir=tmp_path / "cache", poll=2))
        unit = Unit(unit_file, home=home, instance="Contacts")
        assert unit.get("Restart") == ["on-failure"]
        (stop_timeout,) = [int(v) for v in unit.get("TimeoutStopSec")]
        drain = re.search(r"drain_timeout=(\d+)", " ".join(unit.command("ExecStart")))
        assert drain and int(drain.group(1)) < stop_timeout, \
            "drain_timeout must end before systemd's stop timeout"
        try:
            unit.run_pre(env)
            assert mnt.is_dir()
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(unit.command("ExecStart"), env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
            wait_until(lambda: proc.poll() is not None or is_mounted(mnt), timeout=60,
                       what="the mount")
            assert proc.poll() is None, log_path.read_text()
            wait_until(lambda: len(vcf_files(mnt)) == 3, timeout=60, what="3 contacts")
            # Every request now takes 3 s: the new contact is still on its way
            # when the stop comes.
            emu.faults({"latency_ms": 3000})
            (mnt / "Stopping Stella.vcf").write_text(NEW_CARD, newline="")
            status = (mnt / ".contactfs" / "status").read_text()
            pending = re.search(r"^pending changes: (\d+)", status, re.M)
            assert pending and int(pending.group(1)) >= 1, status
            if busy:
                holder = subprocess.Popen(["sleep", "600"], cwd=str(mnt))
            stop = run(unit.command("ExecStop"), env=env)
            if busy:
                assert stop.returncode != 0, "fusermount3 -u of a busy mount succeeded"
            else:
                assert stop.returncode == 0, stop.stderr
            proc.send_signal(signal.SIGTERM)  # systemd: KillMode=control-group
            rc = proc.wait(timeout=stop_timeout)
        finally:
            for p in (proc, holder):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        journal = log_path.read_text()
        assert rc == 0, journal
        for bad in ("contactfs: error:", "Sanitizer", "runtime error:"):
            assert bad not in journal, journal
        assert "still to send" not in journal, journal
        assert re.search(r"unmounted .*Contacts", journal), \
            "-f logs to standard error (the journal):\n" + journal
        emu.faults({"latency_ms": 0})
        names = [c.get("displayName") for c in mailbox(emu)["contacts"]]
        assert "Stopping Stella" in names, names
    assert not is_mounted(mnt)


def test_unit_starts_again_after_a_crash_left_its_mount_point_dead(prefix, tmp_path):
    """Restart=on-failure runs ExecStartPre and ExecStart again. A daemon
    killed with SIGKILL leaves its mount point dead ("Transport endpoint is
    not connected"): the restart must clear it and mount again."""
    need_fuse()
    env = private_env(tmp_path)
    home = Path(env["HOME"])
    mnt = home / "Contacts"
    procs = []
    with Emulator("--contacts", "2") as emu:
        (home / ".config" / "contactfs").mkdir(parents=True)
        (home / ".config" / "contactfs" / "Contacts.env").write_text(
            "CONTACTFS_OPTIONS=%s\n" % mount_options(emu, cache_dir=tmp_path / "cache", poll=2))
        unit = Unit(prefix / "lib/systemd/user/contactfs@.service", home=home,
                    instance="Contacts")
        try:
            for attempt in (1, 2):
                unit.run_pre(env)
                with open(tmp_path / ("journal%d.log" % attempt), "wb") as log:
                    procs.append(subprocess.Popen(unit.command("ExecStart"), env=env,
                                                  stdout=log, stderr=subprocess.STDOUT))
                proc = procs[-1]
                wait_until(lambda: proc.poll() is not None or len(vcf_files(mnt)) == 2,
                           timeout=60, what="2 contacts")
                assert proc.poll() is None, (tmp_path / ("journal%d.log" % attempt)).read_text()
                if attempt == 1:
                    proc.kill()  # a crash
                    proc.wait()
                    with pytest.raises(OSError):
                        os.listdir(mnt)  # dead until someone unmounts it
            assert run(unit.command("ExecStop"), env=env).returncode == 0
            assert procs[-1].wait(timeout=60) == 0, (tmp_path / "journal2.log").read_text()
            journal = (tmp_path / "journal2.log").read_text()
            for bad in ("contactfs: error:", "Sanitizer", "runtime error:"):
                assert bad not in journal, journal
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    assert not is_mounted(mnt)
