"""-o cache_dir=DIR with a real mount: a directory that does not exist is
made 0700 and is the cache's own; one that exists is used only when it is
private and empty or already the cache, and its mode is never changed
(cache_dir=$HOME must not lock anyone out of their home)."""
import os
import stat

from emulator_proc import Emulator
from mount_proc import Mount, is_mounted, vcf_files, wait_until
from test_mount_cli import EX_NOPERM, cfs, cleanup, fuse, mount_options, private_env, run  # noqa: F401 (fuse: a fixture)

EX_CANTCREAT = 73


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(root):
    """Every path below root with its mode."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = mode(p)
    return out


def a_home(path, dir_mode):
    path.mkdir()
    (path / ".bashrc").write_text("# mine\n")
    (path / "Documents").mkdir()
    (path / "Documents" / "letter.txt").write_text("Dear Jane\n")
    os.chmod(path, dir_mode)
    return path


def refused_mount(tmp_path, cache, want_rc, *want_in_stderr):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before, before_mode = snapshot(cache), mode(cache)
    with Emulator("--contacts", "1") as emu:
        try:
            r = run([cfs(), "-f", "-o", mount_options(emu, cache_dir=cache), mnt],
                    env=private_env(tmp_path))
            assert r.returncode == want_rc, "exit %d: %s" % (r.returncode, r.stderr)
            for text in (str(cache),) + want_in_stderr:
                assert text in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert not is_mounted(mnt)
        finally:
            cleanup(mnt)
    assert mode(cache) == before_mode, "the directory's mode was changed"
    assert snapshot(cache) == before, "something in the directory was created or changed"


def test_cache_dir_that_is_a_home_open_to_others_is_refused_and_its_mode_kept(tmp_path, fuse):
    home = a_home(tmp_path / "home-0755", 0o755)
    refused_mount(tmp_path, home, EX_NOPERM, "mode 0755", "chmod 700")


def test_cache_dir_that_is_a_private_home_with_files_is_refused_and_left_alone(tmp_path, fuse):
    home = a_home(tmp_path / "home-0700", 0o700)
    refused_mount(tmp_path, home, EX_CANTCREAT, "holds other files and no contactfs cache")


def test_new_cache_dir_is_made_0700_with_its_parents_and_is_used_again(tmp_path, fuse):
    cache = tmp_path / "caches" / "work"
    with Emulator("--contacts", "2") as emu:
        for _ in range(2):  # made, then found holding the cache
            with Mount(emu, tmp_path, cache=cache) as m:
                m.wait_synced()
                assert len(vcf_files(m.root)) == 2
            assert mode(cache) == 0o700 and mode(cache.parent) == 0o700
            assert mode(cache / "cache.db") == 0o600


def test_an_empty_private_cache_dir_made_beforehand_is_used(tmp_path, fuse):
    cache = tmp_path / "mine"
    cache.mkdir(mode=0o700)
    with Emulator("--contacts", "2") as emu, Mount(emu, tmp_path, cache=cache) as m:
        wait_until(lambda: len(vcf_files(m.root)) == 2, timeout=60, what="2 contacts")
    assert (cache / "cache.db").is_file() and mode(cache) == 0o700
