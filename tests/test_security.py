"""Security: private modes, untrusted cache dirs, crafted files never run code, signing, no secrets on disk."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import random
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest
import xxhash

from memollm import CacheMiss, CacheWarning, cache_llm
from memollm import codec as _codec
from memollm import entry as _entry

pytestmark = pytest.mark.timeout(60)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def entry_files(root: Path) -> list[Path]:
    return sorted(root.rglob("output.msgpack"))


def replace_file(path: Path, data: bytes) -> None:
    """Swap a file's bytes the way a copy from elsewhere would (a new file, renamed in)."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Counted:
    """A cached provider that counts its real calls."""

    def __init__(self, **options: Any) -> None:
        self.calls = 0

        def answer(prompt: str) -> str:
            self.calls += 1
            return f"answer to {prompt}"

        self.f = cache_llm(**options)(answer)


# -- modes -----------------------------------------------------------------------------------

POPULATE = """
import asyncio, os, sys
os.umask(0)  # the modes must not depend on the umask
from memollm import cache_llm

@cache_llm(cache_dir=sys.argv[1])
def answer(prompt):
    return "answer to " + prompt

@cache_llm(cache_dir=sys.argv[1])
def tokens(prompt):
    yield from ("a", "b")

@cache_llm(cache_dir=sys.argv[1])
async def answer_async(prompt):
    return "async answer to " + prompt

for p in ("x", "y"):
    answer(p); list(tokens(p)); asyncio.run(answer_async(p))
answer.cache_info()
"""


def test_cache_dirs_are_0700_and_files_0600(tmp_path: Path) -> None:
    cache = tmp_path / "new" / "cache"  # intermediate directories created too
    out = subprocess.run([sys.executable, "-c", POPULATE, str(cache)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    dirs = [cache, *sorted(p for p in cache.rglob("*") if p.is_dir())]
    files = all_files(cache)
    names = {p.name for p in files}
    assert {"index.sqlite3", ".gitignore", "output.msgpack"} <= names
    assert (cache / "locks").is_dir()  # leaders remove their lock files; the dir stays
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    for d in dirs:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# -- untrusted cache dirs --------------------------------------------------------------------


def check_untrusted(cache: Path, expected: str) -> None:
    c = Counted(cache_dir=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert c.f("q") == "answer to q"
    assert c.calls == 3  # bypassed: nothing read ...
    assert os.listdir(cache) == []  # ... nothing written
    assert len(caught) == 1 and issubclass(caught[0].category, CacheWarning)
    assert expected in str(caught[0].message) and "not trusted" in str(caught[0].message)


@pytest.mark.parametrize("mode", [0o777, 0o702, 0o1777])
def test_cache_dir_writable_by_others_is_not_trusted(mode: int, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    check_untrusted(cache, "writable by group or others")


def test_offline_miss_on_an_untrusted_cache_dir_says_why(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    c = Counted(cache_dir=cache, mode="offline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        with pytest.raises(CacheMiss, match="cannot be used: .*not trusted"):
            c.f("q")
    assert c.calls == 0


def own_private_group() -> "int | None":
    """The current user's primary group if it is their user private group (as with umask 002)."""
    import grp
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid())
    return group.gr_gid if group.gr_name == user and set(group.gr_mem) <= {user} else None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chgrp to a shared group needs root")
def test_cache_dir_writable_by_a_shared_group_is_not_trusted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chown(cache, -1, 65534)  # nogroup: not the user's own group
    cache.chmod(0o770)
    check_untrusted(cache, "writable by group or others")


@pytest.mark.skipif(not hasattr(os, "geteuid") or own_private_group() is None, reason="needs a user private group")
def test_cache_dir_writable_by_the_users_own_group_is_trusted(tmp_path: Path) -> None:
    """A cache committed to git and cloned with umask 002 (dirs 0775) is used as it is."""
    cache = tmp_path / "cache"
    assert read_all(cache)["calls"] == 2
    for path in [cache, *cache.rglob("*")]:
        if path.is_dir():
            os.chown(path, -1, own_private_group())
            path.chmod(0o775)
    result = read_all(cache)
    assert result == {"values": ["answer to x", "answer to y"], "calls": 0, "warnings": []}


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_cache_dir_owned_by_another_user_is_not_trusted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    check_untrusted(cache, "owned by another user")


READ_ALL = """
import json, sys, warnings
from memollm import cache_llm
calls = []

@cache_llm(cache_dir=sys.argv[1])
def answer(prompt):
    calls.append(prompt)
    return "answer to " + prompt

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    values = [answer(p) for p in ("x", "y")]
print(json.dumps({"values": values, "calls": len(calls), "warnings": [str(w.message) for w in caught]}))
"""


def read_all(cache: Path, **env: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", READ_ALL, str(cache)], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_entries_of_a_dir_made_untrusted_are_not_served(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert read_all(cache)["calls"] == 2
    assert read_all(cache)["calls"] == 0
    cache.chmod(0o777)  # anyone could have planted these entries
    result = read_all(cache)
    assert result["values"] == ["answer to x", "answer to y"]
    assert result["calls"] == 2 and len(result["warnings"]) == 1


def test_a_dir_made_untrusted_while_in_use_is_bypassed_in_the_same_process(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = Counted(cache_dir=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.f("x") == "answer to x"  # stored
        cache.chmod(0o777)  # anyone could plant entries from now on
        assert c.f("x") == "answer to x" and c.f("y") == "answer to y"
        assert c.f("y") == "answer to y"
    assert c.calls == 4  # nothing read from the dir, nothing written to it after the chmod
    problems = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(problems) == 1 and "not trusted" in problems[0], problems
    assert len(list(cache.rglob("output.msgpack"))) == 1


# -- crafted files never execute code --------------------------------------------------------


class Evil:
    """Unpickling it creates the marker file named by $MEMOLLM_TEST_MARKER."""

    def __reduce__(self) -> Any:
        return (open, (os.environ["MEMOLLM_TEST_MARKER"], "w"))


def test_lock_files_are_0600_while_held(tmp_path: Path) -> None:
    import time

    from memollm import flight

    path = str(tmp_path / "cache" / "locks" / ("ab" * 16 + ".lock"))
    lock = flight.lock_file(path, time.monotonic() + 1)
    assert lock is not None
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    finally:
        lock.release()
    assert not os.path.exists(path)


def test_malicious_pickle_in_every_file_runs_nothing(tmp_path: Path) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "PWNED"
    os.environ["MEMOLLM_TEST_MARKER"] = str(marker)
    try:
        payload = pickle.dumps(Evil())
    finally:
        del os.environ["MEMOLLM_TEST_MARKER"]
    assert read_all(cache)["calls"] == 2
    files = all_files(cache)
    assert len(files) >= 4  # two entries, the index, .gitignore
    for path in files:
        path.write_bytes(payload)
    for env in ({}, {"MEMOLLM_SECRET": "s3cret"}):
        result = read_all(cache, MEMOLLM_TEST_MARKER=str(marker), **env)
        assert result["values"] == ["answer to x", "answer to y"]
        assert not marker.exists()
    assert result["calls"] == 2  # misses at first, then stored again (signed, in the second run)


class Gadget:
    """A class of the program that runs code when built by any usual route."""

    marker = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        Path(cls.marker).write_text("__new__")
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Path(self.marker).write_text("__init__")

    def __setstate__(self, state: Any) -> None:
        Path(self.marker).write_text("__setstate__")

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        Path(cls.marker).write_text("model_validate")


def crafted_bodies() -> Iterator[tuple[str, bytes]]:
    """Entry bodies a hostile file could hold, with valid framing and checksums."""
    pack = msgpack.packb
    refs = [[Gadget.__module__, Gadget.__qualname__], ["subprocess", "Popen"], ["os", "system"], ["builtins", "eval"], ["nope.nowhere", "X"]]
    for ref in refs:
        yield f"dataclass {ref}", pack(msgpack.ExtType(_codec.EXT_DATACLASS, pack(ref) + pack({"args": ["touch x"]})))
        yield f"enum {ref}", pack(msgpack.ExtType(_codec.EXT_ENUM, pack([*ref, "touch x"])))
        yield f"model {ref}", pack(msgpack.ExtType(_codec.EXT_MODEL, pack(ref) + pack([{}, None, [], None])))
    yield "pickle", pack(msgpack.ExtType(_codec.EXT_PICKLE, pickle.dumps(Evil())))
    yield "nested", b"\x91" * 100_000 + b"\xc0"
    yield "huge array", b"\xdd\xff\xff\xff\xff"
    yield "huge str", b"\xdb\xff\xff\xff\xf0abc"
    rng = random.Random(7)
    for i in range(300):
        code = rng.choice([*range(0, 20), 127])
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        yield f"random ext {i}", pack(msgpack.ExtType(code, payload))
        yield f"random bytes {i}", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))


def test_crafted_entries_with_valid_checksums_run_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "PWNED"
    monkeypatch.setattr(Gadget, "marker", str(marker))
    monkeypatch.setenv("MEMOLLM_TEST_MARKER", str(marker))
    c = Counted(cache_dir=cache)
    c.f("q")
    [path] = entry_files(cache)
    meta, _ = _entry.read_meta(path.read_bytes())
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for name, body in crafted_bodies():
            replace_file(path, _entry.pack_entry(meta, body))
            value = c.f("q")  # a miss (recomputed and stored again), or at worst a plain value
            assert not marker.exists(), name
            assert isinstance(value, (str, bytes, int, float, list, dict, tuple, type(None))), (name, value)


def test_a_non_pydantic_class_with_model_validate_is_not_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "PWNED"
    monkeypatch.setattr(Gadget, "marker", str(marker))
    c = Counted(cache_dir=cache)
    c.f("q")
    [path] = entry_files(cache)
    meta, _ = _entry.read_meta(path.read_bytes())
    ref = [Gadget.__module__, Gadget.__qualname__]
    body = msgpack.packb(msgpack.ExtType(_codec.EXT_PYDANTIC, msgpack.packb(ref) + msgpack.packb({"cmd": "touch x"})))
    replace_file(path, _entry.pack_entry(meta, body))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert c.f("q") == "answer to q"
    assert not marker.exists()


# -- signing ---------------------------------------------------------------------------------


def signed(data: bytes) -> bool:
    return bool(data[5] & _entry.FLAG_SIGNED)


def refresh_checksum(data: bytearray, mac: bool) -> bytes:
    """Recompute the xxh3 checksum after an edit, so that only the signature can notice it."""
    end = len(data) - (32 if mac else 0)
    data[end - 16 : end] = xxhash.xxh3_128_digest(bytes(data[: end - 16]))
    return bytes(data)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_signed_entries_verify(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    if how == "argument":
        c = Counted(cache_dir=cache, secret="k3y")
    else:
        monkeypatch.setenv("MEMOLLM_SECRET", "k3y")
        c = Counted(cache_dir=cache)
    assert c.f("q") == c.f("q") == "answer to q"
    assert c.calls == 1
    [path] = entry_files(cache)
    assert signed(path.read_bytes())
    assert read_all(cache, MEMOLLM_SECRET="k3y")["warnings"] == []  # another process with the secret reads it


def test_signed_entries_are_readable_without_a_secret(tmp_path: Path) -> None:
    """The secret protects the readers that have it; one without it only checks the checksum."""
    cache = tmp_path / "cache"
    writer = Counted(cache_dir=cache, secret="k3y")
    writer.f("q")
    reader = Counted(cache_dir=cache)
    assert reader.f("q") == "answer to q" and reader.calls == 0


def tampered_cases(data: bytes) -> Iterator[tuple[str, bytes]]:
    body_at = len(data) - 32 - 16 - 3  # a byte near the end of the body
    flipped = bytearray(data)
    flipped[body_at] ^= 0x01
    yield "one body byte", bytes(flipped)
    yield "one body byte, checksum fixed", refresh_checksum(bytearray(flipped), mac=True)
    stripped = bytearray(data[:-32])
    stripped[5] &= ~_entry.FLAG_SIGNED
    yield "signature stripped", refresh_checksum(stripped, mac=False)
    yield "signature forged", data[:-32] + os.urandom(32)
    yield "signature truncated", data[:-1]


def test_altered_or_unsigned_entries_are_rejected(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = Counted(cache_dir=cache, secret="k3y")
    c.f("q")
    [path] = entry_files(cache)
    original = path.read_bytes()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for name, data in tampered_cases(original):
            replace_file(path, data)
            calls = c.calls
            assert c.f("q") == "answer to q"
            assert c.calls == calls + 1, name  # a miss, recomputed
            assert path.read_bytes() != data  # and replaced by a good, signed entry
            assert signed(path.read_bytes())


def test_unsigned_entries_are_rejected_when_a_secret_is_set(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    Counted(cache_dir=cache).f("q")  # written without a secret
    c = Counted(cache_dir=cache, secret="k3y")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert c.f("q") == "answer to q"
    assert c.calls == 1
    assert c.f("q") == "answer to q" and c.calls == 1  # stored again, signed


def test_a_different_secret_is_rejected(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    Counted(cache_dir=cache, secret="one").f("q")
    c = Counted(cache_dir=cache, secret="two")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert c.f("q") == "answer to q"
    assert c.calls == 1
    result = read_all(cache, MEMOLLM_SECRET="one")  # x: now signed with "two", rejected; y: new
    assert result["calls"] == 2


# -- secrets never reach the disk ------------------------------------------------------------

SECRETS = {
    "api_key": "sk-APIKEY-0001",
    "apikey": "sk-APIKEY-0002",
    "openai_api_key": "sk-APIKEY-0003",
    "client_secret": "cs-SECRET-0004",
    "secret": "s-SECRET-0005",
    "password": "pw-PASSWORD-0006",
    "passwd": "pw-PASSWD-0007",
    "Authorization": "Bearer AUTH-0008",
    "token": "tok-TOKEN-0009",
    "access_token": "tok-ACCESS-0010",
    "auth_token": "tok-AUTH-0011",
    "bearer_token": "tok-BEARER-0012",
}
HEADERS = {"Authorization": "Bearer HEADER-0013", "api-key": "HEADER-0014", "X-Api-Key": "HEADER-0015", "x-request-tag": "kept"}
EXTRA_HEADERS = {"authorization": "Bearer HEADER-0016", "API-KEY": "HEADER-0017", "x-api-key": "HEADER-0018"}


def secret_values() -> list[str]:
    values = [*SECRETS.values(), *HEADERS.values(), *EXTRA_HEADERS.values()]
    return [v for v in values if v != "kept"]


def test_secret_arguments_never_reach_the_disk(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calls: list[str] = []

    @cache_llm(cache_dir=cache)
    def explicit(
        prompt: str,
        api_key: str = "",
        apikey: str = "",
        openai_api_key: str = "",
        client_secret: str = "",
        secret: str = "",
        password: str = "",
        passwd: str = "",
        Authorization: str = "",
        token: str = "",
        access_token: str = "",
        auth_token: str = "",
        bearer_token: str = "",
        headers: Any = None,
        extra_headers: Any = None,
    ) -> str:
        calls.append(prompt)
        return "an answer"

    @cache_llm(cache_dir=cache)
    def keywords(prompt: str, **kwargs: Any) -> str:
        calls.append(prompt)
        return "an answer"

    @cache_llm(cache_dir=cache)
    def tokens(prompt: str, **kwargs: Any) -> Iterator[str]:
        calls.append(prompt)
        yield from ("a", "b")

    @cache_llm(cache_dir=cache)
    async def answer_async(prompt: str, api_key: str = "", headers: Any = None) -> str:
        calls.append(prompt)
        return "an answer"

    def everything(salt: str = "") -> dict[str, Any]:
        kw: dict[str, Any] = {k: v + salt for k, v in SECRETS.items()}
        kw["headers"] = {k: v + salt if k != "x-request-tag" else v for k, v in HEADERS.items()}
        kw["extra_headers"] = {k: v + salt for k, v in EXTRA_HEADERS.items()}
        return kw

    explicit("hello", **everything())
    keywords("hello", **everything())
    list(tokens("hello", **everything()))
    asyncio.run(answer_async("hello", api_key=SECRETS["api_key"], headers=HEADERS))
    assert len(calls) == 4
    # the secrets are not part of the key either: other credentials, same entries
    explicit("hello", **everything("-rotated"))
    keywords("hello", **everything("-rotated"))
    list(tokens("hello", **everything("-rotated")))
    assert len(calls) == 4
    explicit.cache_info()  # flushes the index, usage counters ...

    files = all_files(cache)
    assert len(entry_files(cache)) == 4
    for path in files:
        blob = path.read_bytes()
        for value in secret_values():
            for form in (value.encode(), value.encode("utf-16-le")):
                assert form not in blob, (value, path)
    # the request is recorded in each entry (issue 14), with the secrets left out
    assert all(b"hello" in path.read_bytes() for path in entry_files(cache))
    for path in cache.rglob("*"):
        assert not any(v in str(path) for v in secret_values())
