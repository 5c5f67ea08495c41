"""Dataset import (CLI and upload widget share core.dataset_import): hostile archives are refused with one
clear line and leave nothing behind; broken files inside a usable archive are skipped and summarised;
odd image formats are converted, never fatal."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

import core.dataset_import as di
import pages._ui as ui
from core import datasets as ds
from core.dataset_import import import_dataset
from core.errors import DatasetError, UnsafePath

from .kit import (Upload, add_symlink, classes, encode, make_zip, patch_central, png, png16, png_header_only,
                  snapshot)

GOOD = {"cats": 3, "dogs": 3}


def _refused(src, name, root, message):
    """Import must raise DatasetError with exactly `message` and leave the datasets folder as it was."""
    before = snapshot(root / "datasets")
    with pytest.raises(DatasetError) as info:
        import_dataset(src, name, root=root)
    assert str(info.value) == message
    assert snapshot(root / "datasets") == before  # no dataset, no .import-* staging folder left behind
    return info


# ------------------------------------------------------------------------------ refused archives
@pytest.mark.parametrize("entry", ["../evil.png", "cats/../../evil.png", "..\\..\\evil.png"])
def test_zip_slip_is_refused_and_nothing_escapes(tmp_path, datasets_home, entry):
    root, _ = datasets_home
    src = make_zip(tmp_path / "slip.zip", {**classes(GOOD), entry: png()})
    _refused(src, "slip", root, f"slip.zip refused: entry {entry!r} points outside the archive ('..')")
    assert not list(tmp_path.rglob("evil.png"))


@pytest.mark.parametrize("entry", ["/tmp/evil.png", "C:/evil.png", "\\evil.png"])
def test_absolute_entry_is_refused(tmp_path, datasets_home, entry):
    root, _ = datasets_home
    src = make_zip(tmp_path / "abs.zip", {**classes(GOOD), entry: png()})
    _refused(src, "abs", root, f"abs.zip refused: entry {entry!r} has an absolute path")


def test_symlink_entry_is_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "link.zip", classes(GOOD))
    add_symlink(src, "cats/passwd.png", "/etc/passwd")
    _refused(src, "link", root, "link.zip refused: entry 'cats/passwd.png' is a symbolic link")


def test_zip_bomb_by_ratio_is_refused_before_extraction(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "bomb.zip", {**classes(GOOD), "cats/bomb.png": b"\0" * (20 << 20)})
    info = zipfile.ZipFile(src).getinfo("cats/bomb.png")
    ratio = info.file_size // info.compress_size
    _refused(src, "bomb", root, f"bomb.zip refused: entry 'cats/bomb.png' expands {ratio}x (over 200x looks like a zip bomb)")


def test_total_size_cap_is_enforced(tmp_path, datasets_home, monkeypatch):
    root, _ = datasets_home
    entries = classes(GOOD)
    src = make_zip(tmp_path / "big.zip", entries)
    monkeypatch.setattr(di, "MAX_TOTAL_BYTES", 1000)
    total = sum(len(v) for v in entries.values())
    _refused(src, "big", root, f"big.zip refused: it expands to {di._size(total)}, over the 1000 bytes limit")


def test_lying_size_header_is_refused(tmp_path, datasets_home):
    """The central directory claims 1000 bytes for 5 MiB of zeros: zipfile stops at 1000, the CRC fails."""
    root, _ = datasets_home
    src = make_zip(tmp_path / "lie.zip", {**classes(GOOD), "cats/big.png": b"\0" * (5 << 20)})
    patch_central(src, "cats/big.png", file_size=1000)
    _refused(src, "lie", root, "lie.zip refused: entry 'cats/big.png' is damaged (Bad CRC-32 for file 'cats/big.png')")


def test_encrypted_entry_is_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "locked.zip", classes(GOOD))
    patch_central(src, "dogs/0.png", flag_bits=0x1)
    _refused(src, "locked", root,
             "locked.zip refused: entry 'dogs/0.png' is encrypted; re-create the zip without a password")


def test_a_file_and_a_folder_of_the_same_name_are_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "clash.zip", {"cats": b"x", **classes(GOOD)})
    _refused(src, "clash", root,
             "clash.zip refused: entry 'cats/0.png' clashes with another entry (a file and a folder with the same name)")


@pytest.mark.parametrize("content", ["text", "png", "truncated zip"])
def test_not_a_zip_is_refused(tmp_path, datasets_home, content):
    root, _ = datasets_home
    src = tmp_path / "photos.zip"
    if content == "text":
        src.write_text("hello, I am not an archive")
    elif content == "png":
        src.write_bytes(png())
    else:
        whole = make_zip(tmp_path / "whole.zip", classes(GOOD)).read_bytes()
        src.write_bytes(whole[: len(whole) // 2])
    _refused(src, "photos", root, "photos.zip is not a zip archive or a folder of class sub-folders")


def test_empty_archives_are_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    _refused(empty, "empty", root, "empty.zip is empty: it holds no files")
    dirs_only = tmp_path / "dirs.zip"
    with zipfile.ZipFile(dirs_only, "w") as z:
        z.writestr("cats/", b"")
        z.writestr("dogs/", b"")
    _refused(dirs_only, "dirs", root, "dirs.zip is empty: it holds no files")


def test_single_class_is_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "one.zip", classes({"cats": 4}))
    _refused(src, "one", root, "one.zip has a single class ('cats'); a classifier needs at least two class folders")


def test_class_with_one_usable_image_is_refused(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "few.zip", {**classes({"cats": 3, "dogs": 1}), "dogs/broken.png": b"not a png"})
    _refused(src, "few", root, "few.zip: class 'dogs' has 1 usable image(s); every class needs at least 2")


def test_only_junk_is_refused_naming_the_first_file(tmp_path, datasets_home):
    root, _ = datasets_home
    src = make_zip(tmp_path / "junk.zip", {"cats/a.jpg": b"nope", "dogs/b.png": b""})
    _refused(src, "junk", root, "junk.zip holds no usable images (2 files skipped, first: cats/a.jpg: not images)")


# ------------------------------------------------------------------------- nothing is ever lost
def test_failed_reimport_keeps_the_existing_dataset_byte_for_byte(tmp_path, datasets_home):
    root, datasets = datasets_home
    import_dataset(make_zip(tmp_path / "pets.zip", classes(GOOD)), "pets", root=root)
    kept = snapshot(datasets)
    assert set(kept) == {"pets", "pets/cats", "pets/dogs", *(f"pets/{c}/{i}.png" for c in GOOD for i in range(3))}
    # the hostile entry comes last, after good files were already extracted into the staging folder
    hostile = make_zip(tmp_path / "v2.zip", {**classes({"cats": 5, "dogs": 5}, start=50), "dogs/big.png": b"\0" * (5 << 20)})
    patch_central(hostile, "dogs/big.png", file_size=10)
    for overwrite in (False, True):
        with pytest.raises(DatasetError) as info:
            import_dataset(hostile, "pets", root=root, overwrite=overwrite)
        expected = ("v2.zip refused: entry 'dogs/big.png' is damaged (Bad CRC-32 for file 'dogs/big.png')" if overwrite
                    else "a dataset called 'pets' already exists; choose another name or delete it first")
        assert str(info.value) == expected
        assert snapshot(datasets) == kept
    assert ds.load_dataset("pets", root).class_counts() == {"cats": 3, "dogs": 3}


def test_successful_overwrite_replaces_atomically(tmp_path, datasets_home):
    root, datasets = datasets_home
    import_dataset(make_zip(tmp_path / "a.zip", classes(GOOD)), "pets", root=root)
    report = import_dataset(make_zip(tmp_path / "b.zip", classes({"cats": 2, "dogs": 2, "birds": 2}, start=9)), "pets",
                            root=root, overwrite=True)
    assert report.counts == {"birds": 2, "cats": 2, "dogs": 2}
    assert sorted(p.name for p in datasets.iterdir()) == ["pets"]  # the old copy and the staging folder are gone
    assert sorted(p.name for p in (datasets / "pets").iterdir()) == ["birds", "cats", "dogs"]


# -------------------------------------------------------------------- skipped, with a summary
def test_broken_files_are_skipped_with_a_summary(tmp_path, datasets_home):
    root, datasets = datasets_home
    good = png(seed=1)
    entries = {
        **classes(GOOD),
        "cats/truncated.png": good[: len(good) // 2],  # a real PNG cut short
        "cats/x.jpg": b"GIF89a but really just text",  # not an image, image extension
        "dogs/empty.png": b"",  # 0 bytes
        "dogs/huge.png": png_header_only(20_000, 20_000),  # 400M pixels: PIL's decompression-bomb guard
        "dogs/notes.txt": b"hello",
        "__MACOSX/cats/._0.png": b"\x00\x05\x16\x07",
        "cats/.DS_Store": b"\0\0\0\1Bud1",
        "readme.md": b"# my photos",
    }
    report = import_dataset(make_zip(tmp_path / "mixed.zip", entries), "mixed", root=root)
    assert report.counts == {"cats": 3, "dogs": 3}
    assert dict(report.skipped) == {
        "__MACOSX/cats/._0.png": "hidden or __MACOSX", "cats/.DS_Store": "hidden or __MACOSX",
        "cats/truncated.png": "corrupt", "cats/x.jpg": "not images", "dogs/empty.png": "empty (0 bytes)",
        "dogs/huge.png": "too many pixels (decompression bomb)", "dogs/notes.txt": "not images",
        "readme.md": "not inside a class folder",
    }
    assert report.summary() == (
        "imported 6 images in 2 classes as 'mixed'; 8 files skipped: 2 hidden or __MACOSX, 2 not images, 1 corrupt, "
        "1 empty (0 bytes), 1 too many pixels (decompression bomb), 1 not inside a class folder — first: "
        "__MACOSX/cats/._0.png")
    assert sorted(str(p.relative_to(datasets)) for p in datasets.rglob("*.png")) == \
        [f"mixed/{c}/{i}.png" for c in GOOD for i in range(3)]  # only the usable images were kept


# ------------------------------------------------------------------------ convert, don't fail
def _exif_rotated() -> bytes:
    """30x20 stored red-on-top / blue-below with EXIF orientation 6 (display rotated 90° clockwise):
    shown upright it is blue on the left, red on the right."""
    im = Image.new("RGB", (30, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 10, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", exif=exif.tobytes(), quality=95)


def test_odd_formats_are_converted_to_rgb_right_way_up(tmp_path, datasets_home):
    root, _ = datasets_home
    grey16 = np.full((10, 10), 40000, np.uint16)  # 40000 / 65535 of full scale: mid grey, not white
    palette = Image.new("P", (12, 12), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    entries = {
        "odd/a-cmyk.jpg": encode(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG", quality=95),  # red
        "odd/b-grey16.png": png16(grey16, 0),
        "odd/c-rgb16.png": png16(np.stack([grey16, grey16 * 0, grey16 * 0], -1), 2),
        "odd/d-palette.png": encode(palette, "PNG"),
        "odd/e-transparent.png": encode(Image.new("RGBA", (12, 12), (0, 0, 255, 0)), "PNG"),  # alpha 0 -> white
        "odd/f-grey-alpha.png": encode(Image.new("LA", (12, 12), (100, 255)), "PNG"),
        "odd/g-exif.jpg": _exif_rotated(),
        "odd/h-1bit.png": encode(Image.new("1", (12, 12), 1), "PNG"),
        "plain/0.png": png(seed=3), "plain/1.png": png(seed=4),
    }
    report = import_dataset(make_zip(tmp_path / "odd.zip", entries), "odd", root=root)
    assert report.counts == {"odd": 8, "plain": 2} and report.skipped == []
    data = ds.load_dataset("odd", root)
    size = 20  # the largest shorter side (the 30x20 EXIF photo): small images are not blown up to STORAGE_SIZE
    assert data.images.shape == (10, size, size, 3) and data.images.dtype == np.uint8
    odd = data.images[: 8]  # files load in sorted order: the 8 'odd' ones first
    centre = [tuple(int(v) for v in im[size // 2, size // 2]) for im in odd]
    assert centre[0][0] > 230 and max(centre[0][1:]) < 40  # CMYK red
    assert centre[1] == (156, 156, 156) and centre[2] == (156, 0, 0)  # 16-bit scaled by bit depth
    assert centre[3] == (0, 200, 0)  # palette
    assert centre[4] == (255, 255, 255)  # transparent on white
    assert centre[5] == (100, 100, 100)  # grey + alpha
    assert centre[7] == (255, 255, 255)  # 1-bit
    exif = odd[6].astype(int)  # upright: blue on the left, red on the right (unrotated: red on top)
    left, right = exif[size // 2, size // 4], exif[size // 2, size - 1 - size // 4]
    assert left[2] > 200 and left[0] < 60 and right[0] > 200 and right[2] < 60


def test_unicode_and_spaces_in_names(tmp_path, datasets_home):
    root, datasets = datasets_home
    entries = {"chats noirs/été 1.png": png(seed=1), "chats noirs/été 2.png": png(seed=2),
               "犬/写真 1.png": png(seed=3), "犬/写真 2.png": png(seed=4)}
    report = import_dataset(make_zip(tmp_path / "фото.zip", entries), "Мои фото 2024", root=root)
    assert report.counts == {"chats noirs": 2, "犬": 2}
    assert (datasets / "Мои фото 2024" / "犬" / "写真 1.png").is_file()
    data = ds.load_dataset("Мои фото 2024", root)
    assert data.classes == ["chats noirs", "犬"] and data.images.shape[0] == 4


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "cats\n", "..", ".hidden", ""])
def test_unsafe_dataset_names_are_refused(tmp_path, datasets_home, name):
    root, _ = datasets_home
    src = make_zip(tmp_path / "ok.zip", classes(GOOD))
    with pytest.raises(UnsafePath) as info:
        import_dataset(src, name, root=root)
    assert str(info.value) == (f"dataset name {name!r} is not allowed: use letters, digits, spaces, '.', '_', '+' or '-' "
                               "(at most 100 characters, no '..' and no path separators)")
    assert snapshot(tmp_path / "home") in ({}, {"datasets": "dir"}) and not (tmp_path / "escape").exists()


# -------------------------------------------------------------------------------- upload widget
def test_upload_widget_reports_refusals_and_confines_the_file_name(tmp_path):
    home = tmp_path / "home"
    zip_bytes = make_zip(tmp_path / "x.zip", classes(GOOD)).read_bytes()
    # a hostile browser-side file name: only its stem becomes the default dataset name, inside EMBEDLAB_HOME
    kind, message, name = ui.import_uploaded_zip(Upload("../../../outside.zip", zip_bytes), "", str(home))
    assert (kind, name) == ("success", "outside")
    assert message == "imported 6 images in 2 classes as 'outside'"
    assert (home / "datasets" / "outside" / "cats").is_dir() and not (tmp_path / "outside").exists()
    slip = make_zip(tmp_path / "s.zip", {**classes(GOOD), "../../pwn.png": png()}).read_bytes()
    kind, message, name = ui.import_uploaded_zip(Upload("holiday.zip", slip), "", str(home))
    assert (kind, name) == ("error", None)
    assert message == "holiday.zip refused: entry '../../pwn.png' points outside the archive ('..')"
    assert sorted(p.name for p in (home / "datasets").iterdir()) == ["outside"] and not list(tmp_path.rglob("pwn.png"))


def _folder(spec: dict[str, bytes], top: str = "pets") -> list[Upload]:
    """What st.file_uploader(accept_multiple_files="directory") hands the page: paths inside the chosen folder."""
    return [Upload(f"{top}/{rel}" if top else rel, data) for rel, data in spec.items()]


def test_folder_upload_imports_under_the_folders_name_and_reports_skips(tmp_path):
    home = tmp_path / "home"
    files = _folder({**classes(GOOD), "cats/broken.png": b"\x89PNG\r\n\x1a\n garbage", "notes.txt": b"hi"})
    kind, message, name = ui.import_uploaded_folder(files, "", str(home))
    assert (kind, name) == ("warning", "pets")
    assert message == ("imported 6 images in 2 classes as 'pets'; 2 files skipped: 1 corrupt, 1 not inside a class folder"
                       " — first: cats/broken.png")
    assert sorted(p.name for p in (home / "datasets" / "pets").iterdir()) == ["cats", "dogs"]
    assert ds.load_dataset("pets", home).images.shape[0] == 6


def test_folder_upload_name_is_made_allowed(tmp_path):
    home = tmp_path / "home"
    kind, _, name = ui.import_uploaded_folder(_folder(classes(GOOD), top="Holiday pics (2024)!"), "", str(home))
    assert (kind, name) == ("success", "Holiday pics -2024")
    assert ui.default_dataset_name("../..") == "my-images"


@pytest.mark.parametrize(("path", "reason"), [("pets/../../evil.png", "points outside the archive ('..')"),
                                              ("/etc/evil.png", "has an absolute path"),
                                              ("C:/evil.png", "has an absolute path")])
def test_folder_upload_with_hostile_paths_writes_nothing(tmp_path, path, reason):
    home = tmp_path / "home"
    files = _folder(classes(GOOD)) + [Upload(path, png())]
    kind, message, name = ui.import_uploaded_folder(files, "pets", str(home))
    assert (kind, name) == ("error", None)
    assert message == f"the uploaded folder refused: entry {path!r} {reason}"
    assert snapshot(home / "datasets") == {} and not list(tmp_path.rglob("evil.png"))


def test_upload_ready_says_what_the_server_holds():
    assert ui.upload_ready(None) is None and ui.upload_ready([]) is None
    assert ui.upload_ready(_folder(classes(GOOD))) == f"{sum(GOOD.values())} files from 'pets' uploaded: press Import"
    hostile = _folder({"*x*[a](javascript:1)/c/0.png": png(seed=1)}, top="")
    assert ui.upload_ready(hostile) == "1 file from '\\*x\\*\\[a\\](javascript:1)' uploaded: press Import"


def test_folder_upload_refusals(tmp_path):
    home = tmp_path / "home"
    assert ui.import_uploaded_folder([], "", str(home)) == (
        "error", "choose a folder first (and wait until its files have uploaded)", None)
    twice = _folder(classes(GOOD)) + _folder({"cats/0.png": png(seed=9)})
    assert ui.import_uploaded_folder(twice, "", str(home))[1] == (
        "the uploaded folder refused: entry 'pets/cats/0.png' appears twice")
    one_class = _folder(classes({"cats": 3}))
    assert ui.import_uploaded_folder(one_class, "", str(home))[1] == (
        "the uploaded folder has a single class ('cats'); a classifier needs at least two class folders")
    assert snapshot(home / "datasets") == {}


def test_folder_upload_total_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(di, "MAX_TOTAL_BYTES", 100)
    with pytest.raises(DatasetError) as info:
        di.import_files([("pets/cats/0.png", png()), ("pets/dogs/0.png", png())], "pets", root=tmp_path / "home")
    assert str(info.value).startswith("the uploaded folder refused: it holds ") and "over the 100 bytes limit" in str(info.value)
    assert snapshot(tmp_path / "home" / "datasets") == {}


# ------------------------------------------------------------------- names, concurrency, kills
def _rename_entry(path, old: bytes, new: bytes) -> None:
    """Swap bytes of an entry's name in the local and central headers (same length): names zipfile
    itself would never write (invalid UTF-8, a NUL byte)."""
    raw = path.read_bytes()
    assert len(old) == len(new) and raw.count(old) == 2
    path.write_bytes(raw.replace(old, new))


def _raw_name_patch(path, name: bytes, flag_bits: int) -> None:
    """Set the central-directory flags of the entry whose raw name is `name` (0x800: 'names are UTF-8')."""
    raw = bytearray(path.read_bytes())
    pos = 0
    while (j := raw.find(b"PK\x01\x02", pos)) >= 0:
        n = int.from_bytes(raw[j + 28:j + 30], "little")
        if raw[j + 46:j + 46 + n] == name:
            raw[j + 8:j + 10] = flag_bits.to_bytes(2, "little")
        pos = j + 4
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("old, new, flag, message", [
    (b"cats/Xa.png", b"cats/\xff\xfe.png", True,
     "bad.zip refused: entry b'cats/\\xff\\xfe.png' has a name that is not valid UTF-8 (though the zip marks it as UTF-8); "
     "re-create the zip"),
    (b"Xcats/0.png", b"\0cats/0.png", False, "bad.zip refused: entry '\\x00cats/0.png' has a NUL byte in its name"),
    (b"cats/Xa.png", b"cats/\0a.png", False, "bad.zip refused: entry 'cats/\\x00a.png' has a NUL byte in its name"),
])
def test_zip_entry_names_with_invalid_utf8_or_nul_are_refused_in_one_line(tmp_path, datasets_home, old, new, flag, message):
    """Was: `internal error: UnicodeDecodeError` / `IndexError`, a traceback with server paths in the app."""
    root, _ = datasets_home
    entries = {**classes(GOOD), old.decode(): png(seed=50)}
    path = make_zip(tmp_path / "bad.zip", entries)
    _rename_entry(path, old, new)
    if flag:
        _raw_name_patch(path, new, 0x800)
    _refused(path, "bad", root, message)
    assert snapshot(root / "datasets") == {}
    # the app: the same line in an error box, no traceback
    assert ui.import_uploaded_zip(Upload("bad.zip", path.read_bytes()), "", str(root)) == ("error", message, None)


def test_a_nul_byte_in_a_folder_upload_path_is_refused(tmp_path):
    with pytest.raises(DatasetError) as info:
        di.import_files([("pets/cats/0.png", png()), ("pets/dogs/\0.png", png())], "pets", root=tmp_path / "home")
    assert str(info.value) == "the uploaded folder refused: entry 'pets/dogs/\\x00.png' has a NUL byte in its name"


def test_two_imports_to_one_name_at_once_never_both_succeed(tmp_path, datasets_home):
    """Was: both 'imported', the second user's dataset silently replaced the first."""
    import threading

    root, datasets = datasets_home
    zips = [make_zip(tmp_path / f"{k}.zip", classes({"cats": 3, "dogs": 3}, start=10 * k)) for k in range(2)]
    barrier, results = threading.Barrier(2), {}

    def attempt(k):
        barrier.wait()
        try:
            results[k] = import_dataset(zips[k], "pets", root=root).summary()
        except DatasetError as exc:
            results[k] = f"refused: {exc}"

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [k for k, r in results.items() if not r.startswith("refused")]
    assert len(winners) == 1, results
    loser = 1 - winners[0]
    assert results[loser] == ("refused: a dataset called 'pets' already exists; choose another name or delete it first")
    with zipfile.ZipFile(zips[winners[0]]) as z:  # the dataset on disk is the winner's, whole
        assert {n: z.read(n) for n in z.namelist()} == {
            str(p.relative_to(datasets / "pets")): p.read_bytes() for p in (datasets / "pets").rglob("*.png")}
    assert [p.name for p in datasets.iterdir()] == ["pets"]  # no staging left


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_an_import_waits_for_one_of_the_same_name_then_refuses(tmp_path, datasets_home, monkeypatch):
    root, datasets = datasets_home
    monkeypatch.setattr(di, "LOCK_WAIT_S", 0.3)
    src = make_zip(tmp_path / "ok.zip", classes(GOOD))
    with di.name_lock(root / "datasets", "pets"):  # another session's import of 'pets' is under way
        _refused(src, "pets", root, "another import of 'pets' is still running; try again when it has finished")
        assert import_dataset(src, "other", root=root).n_images == 6  # other names are not held up
    assert import_dataset(src, "pets", root=root).n_images == 6  # released: goes through


_KILLED_IMPORT = r"""
import os, signal, sys
from pathlib import Path
import core.dataset_import as di
real = di._collect_images
def die(*a, **k):  # SIGKILL mid-import: after the archive is unpacked into staging
    os.kill(os.getpid(), signal.SIGKILL)
di._collect_images = die
di.import_dataset(sys.argv[1], "pets", root=Path(sys.argv[2]))
"""


def test_a_killed_imports_staging_is_removed_at_the_next_start(tmp_path, datasets_home):
    """Was: a hidden staging folder left for ever."""
    import subprocess
    import sys

    from helpers import REPO, cli_env

    root, datasets = datasets_home
    src = make_zip(tmp_path / "ok.zip", classes(GOOD))
    proc = subprocess.run([sys.executable, "-c", _KILLED_IMPORT, str(src), str(root)], cwd=REPO, env=cli_env(), timeout=120)
    assert proc.returncode == -9
    left = [p.name for p in datasets.iterdir()]
    assert len(left) == 1 and left[0].startswith(".import-") and (datasets / left[0] / "raw").is_dir()
    with di._staging(datasets) as live:  # a running import's staging stays
        assert ds.list_datasets(root)  # the next app or CLI start (any dataset listing) cleans up
        assert [p.name for p in datasets.iterdir()] == [live.name]
    assert list(datasets.iterdir()) == []
    assert [p.name for p in (root / "locks").iterdir()] == ["dataset-pets.lock"]  # the dead one's, free; removed by the next holder
