"""The mount: what ls, cat, stat and the shell see, and what a plain edit
does on the server. Every test mounts for real against the emulator."""
import errno
import os
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
