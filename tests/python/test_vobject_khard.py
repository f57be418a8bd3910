"""Our vCard output in the hands of other programs: python3-vobject reads it
(with validation) with the input's values, and khard (0.18) reads a
directory of it and shows the names, emails and phones.

The output is made by `convert --to json FIXTURE | convert --to vcard
[--vcard-version V]`, the path every file the mount serves takes.
"""
import json
import os
import subprocess
import textwrap

import pytest

from conftest import (FIXTURES, KEY_PROPS, card_values, compare_cards, convert_ok, have,
                      normalise, vobject_lines, vobject_read)

RICH = ["sample-2.1.vcf", "rich-3.0.vcf", "rich-4.0.vcf", "unicode-3.0.vcf"]


def our_output(fixture, version):
    js = convert_ok(["--to", "json", FIXTURES / fixture])
    return convert_ok(["--to", "vcard", "--vcard-version", version], js)


@pytest.mark.parametrize("version", ["3.0", "4.0"])
@pytest.mark.parametrize("fixture", RICH)
def test_vobject_reads_our_output_with_the_input_values(fixture, version):
    out = our_output(fixture, version)
    # validate=True: vobject's own checks (one FN at least, one N at most...).
    assert vobject_read(out, our_output=True)
    want = vobject_lines((FIXTURES / fixture).read_bytes())
    got = vobject_lines(out, our_output=True)
    assert len(got) == len(want)
    for i, (w, g) in enumerate(zip(want, got), 1):
        d = compare_cards(w, g, KEY_PROPS + ("NICKNAME", "ROLE", "IMPP", "GEO", "PHOTO"))
        assert not d, f"{fixture} as {version}, card {i}:\n{d}"


def served(fixture, version):
    """The fixture as the mount serves it: through Graph JSON that, as a GET
    response does, carries the contact's id (khard needs a UID, and a card
    without one of its own gets the Graph id)."""
    body = json.loads(convert_ok(["--to", "json", FIXTURES / fixture]))
    contacts = body if isinstance(body, list) else [body]
    for i, c in enumerate(contacts):
        c["id"] = f"AAMkAGI2-{fixture}-{i}"
    return convert_ok(["--to", "vcard", "--vcard-version", version],
                      json.dumps(body).encode())


def split_cards(data):
    parts = data.split(b"BEGIN:VCARD\r\n")
    assert parts[0] == b""
    return [b"BEGIN:VCARD\r\n" + p for p in parts[1:]]


def input_values(prop):
    """All normalised values of prop over every card of every fixture."""
    vals = []
    for fixture in RICH:
        for card in vobject_lines((FIXTURES / fixture).read_bytes()):
            vals += list(card_values(card, (prop,)).get(prop, {}).elements())
    return vals


@pytest.fixture(scope="module", params=["3.0", "4.0"])
def khard_env(request, tmp_path_factory):
    """A khard config whose one address book is a vdir of our output."""
    if not have("khard"):
        pytest.fail("khard is not installed (scripts/setup installs it)")
    version = request.param
    root = tmp_path_factory.mktemp(f"khard-{version}")
    book = root / "book"
    book.mkdir()
    n = 0
    for fixture in RICH:
        for card in split_cards(served(fixture, version)):
            n += 1
            (book / f"contact-{n}.vcf").write_bytes(card)
    conf = root / "config" / "khard"
    conf.mkdir(parents=True)
    (conf / "khard.conf").write_text(textwrap.dedent(f"""\
        [addressbooks]
        [[ours]]
        path = {book}

        [general]
        debug = no

        [contact table]
        display = formatted_name
        sort = formatted_name
        show_uids = yes

        [vcard]
        preferred_version = {version}
        skip_unparsable = no
        """))
    env = dict(os.environ, XDG_CONFIG_HOME=str(root / "config"), HOME=str(root), LANG="C.UTF-8")
    return version, env, n


def khard(env, *args):
    r = subprocess.run(["khard", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=120)
    assert r.returncode == 0, f"khard {' '.join(args)}: exit {r.returncode}\n{r.stderr.decode()}"
    return r.stdout.decode("utf-8")


def test_khard_lists_every_contact_by_its_formatted_name(khard_env):
    version, env, n = khard_env
    rows = [line.split("\t") for line in khard(env, "list", "--parsable").splitlines() if line]
    assert len(rows) == n
    assert sorted(r[1] for r in rows) == sorted(input_values("FN"))


def test_khard_shows_every_email_address(khard_env):
    version, env, _ = khard_env
    got = [line.split("\t")[0] for line in khard(env, "email", "--parsable").splitlines()
           if "\t" in line]
    assert sorted(got) == sorted(input_values("EMAIL"))


def test_khard_shows_every_phone_number(khard_env):
    version, env, _ = khard_env
    got = []
    for line in khard(env, "phone", "--parsable").splitlines():
        if "\t" in line:
            number = line.split("\t")[0]
            got.append(number[4:] if number.lower().startswith("tel:") else number)
    assert sorted(got) == sorted(input_values("TEL"))


def test_khard_shows_name_parts_organisation_and_birthday(khard_env):
    import yaml

    version, env, _ = khard_env
    shown = yaml.safe_load(khard(env, "show", "--format", "yaml", "Lovelace"))
    assert shown["Formatted name"] == "Hon. Augusta Ada King Lovelace"
    assert shown["First name"] == "Augusta Ada"
    assert shown["Last name"] == "Lovelace"
    assert shown["Additional"] == "King"
    assert shown["Prefix"] == "Hon."
    assert shown["Suffix"] == "Countess of Lovelace"
    assert shown["Title"] == "Mathematician"
    assert shown["Organisation"] == [["Analytical Engines Ltd", "Research"]]
    assert str(shown["Birthday"]) == "1815-12-10"
    assert shown["Nickname"] == "Ada"
    cats = shown["Categories"]  # a list, or a list of lists (one per CATEGORIES line)
    flat = [c for x in cats for c in (x if isinstance(x, list) else [x])]
    assert sorted(flat) == sorted(["Mathematics", "Poets' daughters", "VIP"])
    assert "Bernoulli numbers" in shown["Note"]
    assert sorted(shown["Webpage"]) == sorted(["https://engines.example/ada",
                                               "https://example.org/~ada?tab=notes;view=all"])


def test_normalise_is_what_the_fixtures_say():
    # Guard for the comparisons above: the helper sees the fixture's values.
    (card,) = vobject_lines((FIXTURES / "sample-2.1.vcf").read_bytes())
    notes = [normalise(line) for line in card if line.name == "NOTE"]
    assert notes == ["Met at the Sevilla fair; prefers e-mail.\nPhone only after 10:00, please."]
    names = [normalise(line) for line in card if line.name == "N"]
    assert names == [("González", "María", "José", "Dra.", "")]
