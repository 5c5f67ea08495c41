"""Resource faults end one run, never the process: a full disk under the feature cache or the run folder,
a file-size limit, a read-only home. The real full disk is a tiny tmpfs (needs root to mount; skipped
otherwise); the free-space probe's test hook (EMBEDLAB_TEST_FREE_BYTES) covers the same paths anywhere."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.diskio import FREE_ENV
from core.store import RunStore
from core.train import CHECKPOINT, TrainConfig, train

from helpers import REPO, cli_env, finish, start_cli

from .kit import TINY_RUN

CLI_RUN = ["--objective", "ce", "--backbone", "test_vit", "--dataset", "digits", "--steps", "2", "--n-per-class", "10",
           "--eval-per-class", "4", "--batch-size", "8", "--quiet"]


@contextlib.contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs", fstype: str | None = "tmpfs"):
    """Mount something at `target` for the test (a tiny tmpfs, a read-only bind); skip where mounting is refused."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", *(["-t", fstype] if fstype else []), *options, source, str(target)]
    if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("mounting needs root (a tmpfs or a read-only bind mount)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path):
    view = folder.with_name(folder.name + "-ro")
    with mounted(view, "--bind", source=str(folder), fstype=None):
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield view


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if "tmp" in p.name)


# ------------------------------------------------------------------------------ full disk
@pytest.mark.slow
def test_a_full_disk_under_the_feature_cache_fails_the_run_not_the_process(tmp_path):
    """Was: SIGBUS from the memory-mapped cache write, exit 135 with no message, a .tmp.npy left behind;
    in the app the whole Streamlit server died."""
    home = tmp_path / "home"
    with mounted(home / "cache" / "features", "-o", "size=16k"):
        env = {FREE_ENV: str(10**12)}  # the probe lies: the real ENOSPC of the write itself is what is tested
        proc = subprocess.Popen([sys.executable, "-m", "core", "train", *CLI_RUN, "--trainable", "frozen", "--runs-dir", str(home)],
                                cwd=REPO, env={**cli_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = finish(proc)
        left = _leftovers(home / "cache" / "features")
    assert done.rc == 1, (done.rc, done.stderr)  # a failed run, not a signal (135 = SIGBUS)
    result = done.last_json()
    assert result["status"] == "failed"
    assert result["error"].startswith(f"not enough free space in {home / 'cache' / 'features'} for cached features: need ")
    assert "Traceback" not in done.stderr
    assert left == []
    assert RunStore(home).get(result["run_id"]).status == "failed"


def test_the_free_space_probe_refuses_a_feature_cache_that_does_not_fit(tmp_path, monkeypatch):
    store, root = RunStore(tmp_path / "runs"), tmp_path
    monkeypatch.setenv(FREE_ENV, "1000")
    r = train(TrainConfig(objective="ce", steps=2, **{**TINY_RUN, "trainable": "frozen"}), store=store, root=root)
    assert r["status"] == "failed"
    features = root / "cache" / "features"
    assert r["error"].startswith(f"not enough free space in {features} for cached features: need ")
    assert r["error"].endswith(", 1.0 kB free")
    assert list(features.iterdir()) == []
    monkeypatch.delenv(FREE_ENV)  # space freed: the same process goes on and the same run now works
    assert train(TrainConfig(objective="ce", steps=2, **{**TINY_RUN, "trainable": "frozen"}), store=store, root=root)["status"] == "finished"


def test_a_checkpoint_that_does_not_fit_fails_the_run_with_the_folder_named(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    monkeypatch.setenv(FREE_ENV, "2000")
    r = train(TrainConfig(objective="ce", steps=2, **TINY_RUN), store=store, root=tmp_path)
    run_dir = store.run_dir(r["run_id"])
    assert r["status"] == "failed"
    assert r["error"].startswith(f"not enough free space in {run_dir} for the checkpoint: need ")
    assert not (run_dir / CHECKPOINT).exists() and _leftovers(run_dir) == []


_FSIZE_SCRIPT = r"""
import json, resource, signal, sys, numpy as np, torch
from pathlib import Path
from core.diskio import NpyWriter, write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process: EFBIG is what a full quota looks like
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
out, folder = {}, Path(sys.argv[1])
try:
    with NpyWriter(folder / "big.npy", (64, 4096), np.float16) as w:
        for _ in range(64):
            w.write(np.ones((1, 4096), np.float16))
except OSError as exc:
    out["npy"] = f"{type(exc).__name__}: {exc}"
try:
    write_atomic(folder / "state.pt", lambda tmp: torch.save({"x": torch.zeros(1 << 18)}, open(tmp, "wb")), need=1 << 20)
except OSError as exc:
    out["torch"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def test_writes_past_a_file_size_limit_raise_instead_of_killing_the_process(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(folder)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["npy"] == (f"DiskFull: not enough free space in {folder}: need 528 kB (a file-size limit)")
    assert out["torch"].startswith(f"DiskFull: not enough free space in {folder}: need 1.0 MB, ")
    assert list(folder.iterdir()) == []  # no temp file left by either


# ---------------------------------------------------------------------------- read-only home
@pytest.mark.slow  # 22 s
def test_a_read_only_home_still_lists_runs(tmp_path):
    home = tmp_path / "home"
    done = finish(start_cli("train", *CLI_RUN, runs_dir=home))
    run_id = done.last_json()["run_id"]
    with read_only(home) as view:
        runs = finish(start_cli("runs", "--json", runs_dir=view))
        show = finish(start_cli("show", run_id, "--json", runs_dir=view))
        datasets = finish(start_cli("datasets", runs_dir=view))
        empty = finish(start_cli("runs", runs_dir=view / "runs"))  # a read-only folder with no runs.db yet
    assert runs.rc == 0, runs.stderr
    assert [r["run_id"] for r in runs.last_json()] == [run_id] and runs.last_json()[0]["status"] == "finished"
    assert show.rc == 0 and show.last_json()["status"] == "finished"
    assert datasets.rc == 0 and "digits" in datasets.stdout
    assert empty.rc == 0 and empty.stdout.strip() == f"no runs in {view / 'runs'}"
    assert "Traceback" not in runs.stderr + show.stderr + datasets.stderr + empty.stderr


def test_the_runs_page_on_a_read_only_home(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    home = tmp_path / "home"
    store = RunStore(home)
    run_id = store.create_run(TrainConfig(objective="ce", **TINY_RUN).to_dict())
    store.set_status(run_id, "running")
    store.set_status(run_id, "finished")
    with read_only(home) as view:
        monkeypatch.setenv("EMBEDLAB_HOME", str(view))
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, at.exception
        assert list(at.dataframe[0].value["run"]) == [run_id]


# --------------------------------------------------------------------------- big datasets
def tiny_png_zip(path: Path, n: int, n_classes: int = 10) -> Path:
    """n distinct 16x16 PNGs (flat random colours, ~170 bytes each: the issue's 17 MB zip of 100,000)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (16, 16, 3)).copy()).save(buf, "PNG")
            z.writestr(f"c{i % n_classes}/{i:06d}.png", buf.getvalue())
    return path


_PEAK_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from core import datasets as ds
from core.dataset_import import import_dataset
import numpy as np, PIL.Image, PIL.PngImagePlugin
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "import":
    info = {"images": import_dataset(sys.argv[3], "big", root=Path(sys.argv[2])).n_images}
else:
    d = ds.load_dataset("big", Path(sys.argv[2]))
    train = ds.splits(d, n_per_class=50, eval_per_class=10)["train"]
    info = {"shape": list(d.images.shape), "memmap": isinstance(d.images, np.memmap), "train": list(train.images.shape),
            "fingerprint": d.fingerprint, "description": d.description}
info["grew_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps(info))
"""


def _peak(step: str, home: Path, src: Path | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, step, str(home), str(src or "")], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_big_import_loads_through_a_memory_map_within_a_small_budget(tmp_path):
    """Was: 100,000 tiny PNGs decoded to 160x160 in RAM (~6 GB, MemoryError; 10k: 1.65 GB peak and a 768 MB
    cache file). Now: stored once at import at their own size, streamed, and read through a memory map."""
    home, n = tmp_path / "home", 2000
    src = tiny_png_zip(tmp_path / "big.zip", n)
    imported = _peak("import", home, src)
    loaded = _peak("load", home)
    assert imported["images"] == n
    assert loaded["shape"] == [n, 16, 16, 3] and loaded["memmap"] and loaded["train"] == [500, 16, 16, 3]
    assert loaded["description"] == f"imported: {n} images in 10 classes, stored at 16x16 px"
    # the old loader held every image at 160x160 twice (a list, then np.stack): +300 MB for 2,000 images
    assert imported["grew_kb"] < 64 * 1024 and loaded["grew_kb"] < 64 * 1024, (imported, loaded)
    stores = list((home / "cache" / "datasets" / "big").iterdir())
    assert len(stores) == 1 and (stores[0] / "images.npy").stat().st_size < n * 16 * 16 * 3 + 4096
    assert _peak("load", home)["fingerprint"] == loaded["fingerprint"]  # stable: caches keyed by it stay valid


def test_unreadable_means_undecodable_and_running_out_of_memory_is_not_unreadable(tmp_path, monkeypatch):
    """Was: 24,174 of 100,000 images 'unreadable': the loader's `except Exception` counted every MemoryError."""
    from PIL import Image

    from core import datasets as ds
    from core.errors import DatasetError

    root = tmp_path / "home"
    folder = root / "datasets" / "byhand"  # copied in by hand, never through the import checks
    for cls in ("cats", "dogs"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 24), (40 * i, 90, 10)).save(folder / cls / f"{i}.png")
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    real = ds.read_image_file
    calls = []

    def exhausted(path, size=ds.STORAGE_SIZE):
        calls.append(path)
        if len(calls) == 3:
            raise MemoryError
        return real(path, size)

    monkeypatch.setattr(ds, "read_image_file", exhausted)
    with pytest.raises(MemoryError):  # the machine's problem: the load fails, no image is called unreadable
        ds.load_dataset("byhand", root)
    assert not list((root / "cache" / "datasets" / "byhand").iterdir())  # nothing half-written kept
    monkeypatch.setattr(ds, "read_image_file", real)
    data = ds.load_dataset("byhand", root)
    assert len(data.labels) == 6 and data.images.shape == (6, 20, 20, 3)
    assert data.description == ("imported: 6 images in 2 classes, stored at 20x20 px; "
                                       "1 unreadable files left out (first: dogs/broken.png: UnidentifiedImageError: cannot identify image file)")
    monkeypatch.setattr(ds, "STORE_MAX_BYTES", 1000)
    (folder / "cats" / "3.png").write_bytes((folder / "cats" / "0.png").read_bytes())  # new files: a new store
    with pytest.raises(DatasetError) as info:
        ds.load_dataset("byhand", root)
    assert str(info.value) == ("dataset 'byhand' is too large: 8 images at 20x20 px take 9.6 kB decoded, over the "
                               "1.0 kB limit of one dataset; import fewer (or smaller) images")


def test_an_import_that_does_not_fit_on_the_disk_keeps_the_old_dataset(tmp_path, monkeypatch):
    from core.dataset_import import import_dataset
    from core.errors import EmbedLabError

    from .kit import classes, make_zip, snapshot

    root = tmp_path / "home"
    import_dataset(make_zip(tmp_path / "old.zip", classes({"cats": 3, "dogs": 3})), "pets", root=root)
    kept = snapshot(root / "datasets")
    monkeypatch.setenv(FREE_ENV, "100")
    with pytest.raises(EmbedLabError) as info:  # DiskFull: the CLI's one line and exit 2, the app's error box
        import_dataset(make_zip(tmp_path / "new.zip", classes({"cats": 4, "dogs": 4}, start=20)), "pets", root=root, overwrite=True)
    store = root / "cache" / "datasets" / "pets"
    assert str(info.value) == f"not enough free space in {store} for the decoded images of 'pets': need 7.6 kB, 100 bytes free"
    assert snapshot(root / "datasets") == kept
    from core import datasets as ds

    assert len(ds.load_dataset("pets", root).labels) == 6  # the old one, still whole


def test_temp_files_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path):
    from core.diskio import clean_stale_temps, temp_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".abc.npy.{dead.pid}-1.tmp"
    stale.write_bytes(b"half")
    live = temp_name(tmp_path / "abc.npy")
    live.write_bytes(b"being written")
    (tmp_path / "abc.npy").write_bytes(b"done")
    assert clean_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "abc.npy"])
