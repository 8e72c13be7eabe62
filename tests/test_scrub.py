"""Scrubber: secrets and their usual encodings never leave the runner."""

from __future__ import annotations

import base64
import random
import string
import time

from runner.scrub import MIN_SECRET_LENGTH, Scrubber

TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_raw_secret_is_masked() -> None:
    scrubber = Scrubber([TOKEN])
    assert scrubber.scrub(f"token={TOKEN}; again {TOKEN}.") == "token=***; again ***."


def test_text_without_secrets_is_unchanged() -> None:
    text = "nothing to see here: ghs_ but not the token"
    assert Scrubber([TOKEN]).scrub(text) == text
    assert Scrubber([]).scrub(text) == text


def test_secret_in_a_clone_url() -> None:
    url = f"https://x-access-token:{TOKEN}@github.com/octo/repo.git"
    message = f"fatal: unable to access '{url}/': The requested URL returned error: 403"
    assert Scrubber([TOKEN]).scrub(message) == (
        "fatal: unable to access 'https://x-access-token:***@github.com/octo/repo.git/': "
        "The requested URL returned error: 403"
    )


def test_url_encoded_secret_is_masked() -> None:
    secret = "p@ss/w:rd! 100%"
    scrubber = Scrubber([secret])
    assert scrubber.scrub("https://u:p%40ss%2Fw%3Ard%21%20100%25@host/") == "https://u:***@host/"
    assert scrubber.scrub("https://u:p%40ss%2fw%3ard%21%20100%25@host/") == "https://u:***@host/"
    assert scrubber.scrub("q=p%40ss%2Fw%3Ard%21+100%25&x=1") == "q=***&x=1"
    assert scrubber.scrub(f"raw {secret} raw") == "raw *** raw"


def test_base64_basic_auth_header_is_masked() -> None:
    header = f"AUTHORIZATION: basic {b64('x-access-token:' + TOKEN)}"
    assert Scrubber([TOKEN]).scrub(f"http.extraheader={header}") == (
        "http.extraheader=AUTHORIZATION: basic ***"
    )


def test_base64_of_the_value_alone_is_masked() -> None:
    for secret in ("sk-ant-api03-abcdef", "four", "fives"):  # each padding length
        encoded = b64(secret)
        assert Scrubber([secret]).scrub(f"<{encoded}>") == "<***>"
        assert Scrubber([secret]).scrub(f"<{encoded.rstrip('=')}>") == "<***>"


def test_short_and_empty_secrets_are_ignored() -> None:
    text = "abc a b c true 1234 xyz"
    assert Scrubber(["", "abc", "a", "xy", "   ", "\t\n  "]).scrub(text) == text
    assert len("1234") == MIN_SECRET_LENGTH
    assert Scrubber(["1234"]).scrub(text) == "abc a b c true *** xyz"


def test_longer_secret_containing_a_shorter_one_masks_whole() -> None:
    scrubber = Scrubber(["ghs_abcd", "ghs_abcdefgh"])
    assert scrubber.scrub("x ghs_abcdefgh y ghs_abcd z") == "x *** y *** z"


def test_overlapping_secrets_are_masked_whole() -> None:
    scrubber = Scrubber(["abcdef", "defghi"])
    assert scrubber.scrub("[abcdefghi]") == "[***]"
    assert scrubber.scrub("[defghiabcdef]") == "[***]"


def test_regex_characters_in_secrets_are_literal() -> None:
    scrubber = Scrubber(["a.b*c(d)|e"])
    assert scrubber.scrub("aXbbbcd e") == "aXbbbcd e"
    assert scrubber.scrub("x a.b*c(d)|e y") == "x *** y"


def test_custom_mask() -> None:
    assert Scrubber([TOKEN], mask="[secret]").scrub(f"t {TOKEN}") == "t [secret]"


def test_scrub_json_walks_nested_values() -> None:
    scrubber = Scrubber([TOKEN, "sk-live-0123456789"])
    event = {
        "type": "tool_call",
        "name": "Bash",
        "summary": f"git push https://x-access-token:{TOKEN}@github.com/o/r.git",
        "input": {
            "env": ["KEY=sk-live-0123456789", ("tuple", TOKEN)],
            TOKEN: "secret as a key",
            "count": 3,
            "ok": True,
            "none": None,
            "ratio": 0.5,
        },
    }
    original = repr(event)

    clean = scrubber.scrub_json(event)

    assert clean == {
        "type": "tool_call",
        "name": "Bash",
        "summary": "git push https://x-access-token:***@github.com/o/r.git",
        "input": {
            "env": ["KEY=***", ("tuple", "***")],
            "***": "secret as a key",
            "count": 3,
            "ok": True,
            "none": None,
            "ratio": 0.5,
        },
    }
    assert repr(event) == original  # the input is not modified


def test_scrub_json_of_scalars() -> None:
    scrubber = Scrubber([TOKEN])
    assert scrubber.scrub_json(TOKEN) == "***"
    assert scrubber.scrub_json(42) == 42
    assert scrubber.scrub_json(None) is None


def mask_by_brute_force(text: str, secrets: list[str]) -> str:
    """Every character of every occurrence masked, each run of them by one mask."""
    covered = [False] * len(text)
    for secret in secrets:
        for i in range(len(text)):
            if text.startswith(secret, i):
                covered[i : i + len(secret)] = [True] * len(secret)
    out = ""
    for i, char in enumerate(text):
        if not covered[i]:
            out += char
        elif i == 0 or not covered[i - 1]:
            out += "***"
    return out


def test_random_text_matches_brute_force_masking() -> None:
    rng = random.Random(7)
    alphabet = "abcdef0123"  # small, so secrets overlap and repeat often
    for _ in range(300):
        secrets = ["".join(rng.choices(alphabet, k=rng.randint(4, 9))) for _ in range(3)]
        pieces = [*secrets, *("".join(rng.choices(alphabet + " ", k=3)) for _ in range(5))]
        text = "".join(rng.choices(pieces, k=20))
        assert Scrubber(secrets).scrub(text) == mask_by_brute_force(text, secrets)


def test_many_secrets_in_a_large_text_is_fast() -> None:
    rng = random.Random(3)
    secrets = ["".join(rng.choices(string.ascii_letters, k=40)) for _ in range(20)]
    text = "".join(rng.choices(string.ascii_letters + " \n", k=1_000_000))
    text = text[:500_000] + secrets[7] + text[500_000:]
    scrubber = Scrubber(secrets)
    started = time.process_time()  # CPU time: a busy machine stretches the wall clock
    clean = scrubber.scrub(text)
    assert time.process_time() - started < 1.0
    assert clean.count("***") == 1
    assert len(clean) == len(text) - 40 + 3
