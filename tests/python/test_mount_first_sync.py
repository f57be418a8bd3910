"""A first sync reads its folders side by side (docs/cache.md, "The first
sync"): a folder that fails does not hold the others back, nothing comes
twice, and the mailbox never sees more than 4 requests at once. Every test
mounts for real against the emulator."""
import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, vcf_files, wait_until
from test_export import expected_uid
from test_photo_flags import photo_gets, photos_checked, server_photos, share, uids_with_photo


@pytest.fixture
def fuse():
    need_fuse()


@pytest.mark.parametrize("status,after", [(503, 1), (404, 0)])
def test_a_failing_folder_holds_no_other_back_and_nothing_comes_twice(tmp_path, fuse, status,
                                                                        after):
    """1,000 contacts, 100 with a photo, in the default folder (500: three
    delta pages of 200) and two others. The default folder, which the
    mount reads first, fails from its delta's page `after` on (503 with
    Retry-After: 0, until the client gives up; or 404) for as long as the
    knob is set: the other folders are read all the same. Then it answers
    again: every contact has one file, every photo is shown, and photos
    were fetched once (for 503, the 200 contacts of the page read before
    the failure are probed, not chosen by the flag)."""
    with Emulator("--contacts", "1000", "--folders", "2", "--photos", "100") as emu:
        box = mailbox(emu)
        default = box["defaultFolderId"]
        others = [c for c in box["contacts"] if c["parentFolderId"] != default]
        assert len(others) == 500
        emu.faults({"folder_error": {"folder": default, "status": status, "after": after,
                                     "count": 1000000}})
        with Mount(emu, tmp_path, poll=1,
                   expect_errors=[r"delta round", r"reading folder"]) as m:
            wait_until(lambda: sum(1 for f in vcf_files(m.root) if "/" in f) == len(others),
                       timeout=120, what="the other folders' contacts")
            emu.faults({"folder_error": None})
            m.wait_rounds(2)
            m.wait_synced()
            photos_checked(m)
            files = vcf_files(m.root)
            assert len(files) == 1000
            assert uids_with_photo(m.root) == server_photos(emu)
            assert set(uids_with_photo(m.root)) == {expected_uid(c) for c in box["contacts"]}
            st = emu.requests()
            assert st["max_in_flight"] <= 4, st
            flagged_and_sample = 100 + 3 * share(3)
            if after == 0:
                assert photo_gets(emu) == flagged_and_sample, st["by_route"]
            else:
                assert flagged_and_sample <= photo_gets(emu) <= flagged_and_sample + 200, \
                    st["by_route"]
