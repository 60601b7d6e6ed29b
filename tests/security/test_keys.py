"""The install key: made atomically (a crash leaves no key or a whole one), damage found, and
keys per purpose derived from it."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.security.keys import KEY_BYTES, Signer, derive_key, load_or_create_key


def test_a_new_key_is_whole_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "install.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert load_or_create_key(path) == key, "the second load reads the same key"
    assert sorted(p.name for p in path.parent.iterdir()) == ["install.key", "install.key.lock"]


@pytest.mark.parametrize("size", [0, 1, KEY_BYTES - 1])
def test_a_key_cut_short_by_a_crash_is_replaced_with_a_warning(
    tmp_path: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "install.key"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="llmos.security.keys"):
        key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and path.read_bytes() == key and key != b"k" * KEY_BYTES
    assert f"held {size} of {KEY_BYTES} bytes" in caplog.text and "replaced" in caplog.text


def test_a_key_longer_than_a_key_is_reported_not_used(tmp_path: Path) -> None:
    path = tmp_path / "install.key"
    path.write_bytes(b"k" * (KEY_BYTES + 1))
    path.chmod(0o600)
    with pytest.raises(LlmosError) as err:
        load_or_create_key(path)
    assert err.value.code is ErrorCode.E_INVAL and "damaged" in err.value.message
    assert path.read_bytes() == b"k" * (KEY_BYTES + 1), "a damaged key is left for a person"


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "install.key"
    load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(LlmosError) as err:
        load_or_create_key(path)
    assert err.value.code is ErrorCode.E_PERM and "chmod 600" in err.value.message


@pytest.mark.parametrize("crash_in", ["write", "fsync"])
def test_a_crash_while_the_key_is_made_leaves_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    path = tmp_path / "install.key"
    real_write = os.write

    def half_then_die(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def die(fd: int) -> None:
        raise OSError(5, "Input/output error")

    if crash_in == "write":
        monkeypatch.setattr(os, "write", half_then_die)
    else:
        monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(OSError):
        load_or_create_key(path)
    assert not path.exists(), "no half-written key is ever in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["install.key.lock"], "the temp went too"
    monkeypatch.undo()
    assert len(load_or_create_key(path)) == KEY_BYTES


def test_a_temporary_file_left_by_a_killed_llmos_is_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "install.key"
    stale = tmp_path / ".install.key.llmos-tmp-0123abcd"
    older = tmp_path / ".install.key.0123456789ab.tmp"  # as llmos once named them
    for left in (stale, older):
        left.write_bytes(b"half")
    load_or_create_key(path)
    assert not stale.exists() and not older.exists()


def _load_into(path: str, out: str) -> None:
    Path(out).write_bytes(load_or_create_key(Path(path)))


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "install.key"
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"seen{n}" for n in range(6)]
    workers = [ctx.Process(target=_load_into, args=(str(path), str(out))) for out in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    seen = {out.read_bytes() for out in outs}
    assert seen == {path.read_bytes()} and len(path.read_bytes()) == KEY_BYTES


def test_derived_keys_are_hkdf_and_differ_per_purpose() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = os.urandom(KEY_BYTES)
    audit = derive_key(secret, "audit lines")
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"llmos key derivation v1", info=b"audit lines"
    ).derive(secret)
    assert audit == expected
    assert derive_key(secret, "audit values") != audit != secret
    assert derive_key(secret, "audit lines") == audit, "the same purpose gives the same key"


def test_a_derived_signer_does_not_accept_the_parents_signatures() -> None:
    install = Signer(b"i" * KEY_BYTES)
    audit = install.derive("audit lines")
    data = b'{"call":"fs.read"}'
    assert not audit.verify(data, install.sign(data))
    assert not install.verify(data, audit.sign(data))
    assert audit.verify(data, audit.sign(data))
