"""core/datasets.py and core/dataset_import.py: built-in datasets, splits, IDX files, imports."""
import gzip

import numpy as np
import pytest

from core import datasets as ds
from core.dataset_import import import_dataset
from core.errors import DatasetError, UnknownName


@pytest.fixture(scope="module")
def root(_session_home):
    return _session_home


@pytest.fixture(scope="module")
def mnist5k(root):
    return ds.load_dataset("mnist5k", root)


@pytest.fixture(scope="module")
def digits(root):
    return ds.load_dataset("digits", root)


def _split_counts(data):
    return np.bincount(data.split, minlength=3).tolist()


# ----------------------------------------------------------------------------- built-ins
def test_mnist5k_shapes_and_fixed_split(mnist5k):
    assert mnist5k.images.shape == (5000, 28, 28, 1) and mnist5k.images.dtype == np.uint8
    assert mnist5k.labels.dtype == np.int64 and np.bincount(mnist5k.labels).tolist() == [500] * 10
    assert _split_counts(mnist5k) == [3500, 750, 750]  # 70/15/15 per class
    for c in range(10):
        assert np.bincount(mnist5k.split[mnist5k.labels == c]).tolist() == [350, 75, 75]
    assert mnist5k.classes == [str(i) for i in range(10)]
    assert mnist5k.prompt_names[3] == "handwritten digit three" and mnist5k.hflip is False


def test_digits_shapes(digits):
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.images.min() == 0  # 0..16 scaled to 0..255
    assert digits.num_classes == 10 and len(digits.labels) == 1797
    assert _split_counts(digits) == [1259, 269, 269]
    assert sum(digits.class_counts("train").values()) == 1259


def test_split_assignment_is_fixed_across_builds(root, digits):
    again = ds.DATASETS["digits"].build(root)  # a fresh build, not the in-process cache
    assert np.array_equal(again.split, digits.split)
    assert again.fingerprint == digits.fingerprint


def test_mnist_stripes_white_in_train_yellow_in_test(root, mnist5k):
    data = ds.load_dataset("mnist-stripes", root)
    assert data.images.shape == (5000, 28, 28, 3)
    assert np.array_equal(data.labels, mnist5k.labels) and np.array_equal(data.split, mnist5k.split)
    # red minus blue: 0 everywhere on a grey digit with white stripes; yellow (255, 220, 0) blended
    # half-and-half into a stripe gives ~127 on every stripe pixel
    red_minus_blue = data.images[..., 0].astype(int) - data.images[..., 2].astype(int)
    per_image = red_minus_blue.reshape(len(data.images), -1).max(1)
    assert per_image[data.split != ds.TEST].max() == 0
    assert per_image[data.split == ds.TEST].min() >= 120
    # and the stripes are really there in train: some rows are brighter than the plain digit
    train = data.images[data.split == ds.TRAIN][..., 0].astype(int)
    plain = mnist5k.images[mnist5k.split == ds.TRAIN][..., 0].astype(int)
    assert (train >= plain).all() and (train > plain).any(axis=(1, 2)).all()


def test_fashion_mnist(root):
    if not (ds.DEBIAN_FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{ds.DEBIAN_FASHION_DIR} is missing (apt-get install dataset-fashion-mnist); the "
                    "download fallback needs the network, which tests never use")
    data = ds.load_dataset("fashion-mnist", root)
    assert data.images.shape == (70000, 28, 28, 1) and data.images.dtype == np.uint8
    assert _split_counts(data) == [54000, 6000, 10000]  # official test set, 10% of train as val
    assert data.classes == ds.FASHION_CLASSES and data.prompt_names[9] == "ankle boot"
    assert np.bincount(data.labels[data.split == ds.TEST]).tolist() == [1000] * 10


def test_unknown_dataset_names_the_choices(root):
    with pytest.raises(UnknownName) as info:
        ds.load_dataset("nope", root)
    message = str(info.value)
    assert message.startswith("unknown dataset 'nope'") and "mnist5k" in message and "digits" in message


# -------------------------------------------------------------------------------- splits
def test_splits_are_disjoint_and_respect_the_fixed_assignment(digits):
    parts = ds.splits(digits)
    ids = [set(parts[name].ids.tolist()) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(len(digits.labels)))  # no caps: everything
    for name, code in ds.SPLIT_NAMES.items():
        assert (digits.split[parts[name].ids] == code).all()
        assert np.array_equal(parts[name].labels, digits.labels[parts[name].ids])
        assert parts[name].images.shape == (len(parts[name]), 8, 8, 1)


def test_splits_n_per_class_balanced_and_deterministic(digits):
    a = ds.splits(digits, n_per_class=7, eval_per_class=5, seed=3)
    b = ds.splits(digits, n_per_class=7, eval_per_class=5, seed=3)
    c = ds.splits(digits, n_per_class=7, eval_per_class=5, seed=4)
    assert np.bincount(a["train"].labels).tolist() == [7] * 10
    assert np.bincount(a["val"].labels).tolist() == [5] * 10
    assert np.bincount(a["test"].labels).tolist() == [5] * 10
    for name in ("train", "val", "test"):
        assert np.array_equal(a[name].ids, b[name].ids)
        assert not np.array_equal(a[name].ids, c[name].ids)
        assert (digits.split[c[name].ids] == ds.SPLIT_NAMES[name]).all()
    # a cap above what a class has keeps all of it
    assert len(ds.splits(digits, n_per_class=10_000)["train"]) == 1259


@pytest.mark.parametrize("labels", [5, 30, 35, 200])
def test_splits_labels_mask(digits, labels):
    parts = ds.splits(digits, n_per_class=20, eval_per_class=5, labels=labels, seed=0)
    train = parts["train"]
    assert train.labelled is not None and train.labelled.dtype == bool and len(train.labelled) == len(train) == 200
    assert int(train.labelled.sum()) == labels
    per_class = np.bincount(train.labels[train.labelled], minlength=10)
    assert per_class.max() - per_class.min() <= 1  # class-balanced
    assert parts["val"].labelled is None
    again = ds.splits(digits, n_per_class=20, eval_per_class=5, labels=labels, seed=0)["train"].labelled
    assert np.array_equal(again, train.labelled)


def test_selection_overrides_n_per_class_and_is_checked(digits):
    train_ids = np.flatnonzero(digits.split == ds.TRAIN)
    chosen = train_ids[[5, 1, 3]]
    parts = ds.splits(digits, n_per_class=2, selection=chosen)
    assert parts["train"].ids.tolist() == sorted(chosen.tolist())
    val_id = np.flatnonzero(digits.split == ds.VAL)[0]
    with pytest.raises(DatasetError, match="not training samples"):
        ds.splits(digits, selection=np.array([train_ids[0], val_id]))


# ----------------------------------------------------------------------------------- IDX
def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 0, 255], dtype=np.uint8)
    for name, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        path = tmp_path / (name + (".gz" if gz else ""))
        if gz:
            with gzip.open(path, "wb") as f:
                f.write(_idx_bytes(arr))
        else:
            path.write_bytes(_idx_bytes(arr))
        got = ds._read_idx(path)
        assert got.shape == arr.shape and got.dtype == np.uint8 and np.array_equal(got, arr)


# ------------------------------------------------------------------------------ imports
def _write_class_folders(folder, colours):
    from PIL import Image

    for cls, colour in colours.items():
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            # non-square, so the centre crop to STORAGE_SIZE is exercised
            Image.new("RGB", (40 + 10 * i, 30), colour).save(folder / cls / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")  # outside any class folder
    first = folder / next(iter(colours))
    whole = (first / "0.png").read_bytes()
    (first / "truncated.png").write_bytes(whole[: len(whole) // 2])  # a real PNG cut short: corrupt
    (first / "fake.png").write_bytes(b"this is not a png")  # unidentifiable


def test_imported_folder_round_trip(tmp_path):
    root = tmp_path / "home"
    src = tmp_path / "photos"
    _write_class_folders(src, {"red": (255, 0, 0), "blue": (0, 0, 255)})
    report = import_dataset(src, "colours", root=root)
    assert report.counts == {"blue": 3, "red": 3}
    assert dict(report.skipped) == {"notes.txt": "not inside a class folder", "red/truncated.png": "corrupt",
                                    "red/fake.png": "not images"}
    entries = ds.list_datasets(root)
    assert entries["colours"].kind == "imported" and entries["colours"].offline

    data = ds.load_dataset("colours", root)
    size = 30  # the largest shorter side (40x30 .. 60x30): small images are stored as they are, not blown up
    assert data.images.shape == (6, size, size, 3) and data.images.dtype == np.uint8
    assert data.classes == ["blue", "red"]
    assert np.bincount(data.labels).tolist() == [3, 3]
    mean_rgb = data.images.reshape(6, -1, 3).mean(1)
    assert np.array_equal(np.argmax(mean_rgb, 1), np.where(data.labels == 0, 2, 0))  # blue images are blue
    assert sorted(np.bincount(data.split, minlength=3).tolist()) == [2, 2, 2]  # 1/1/1 per class

    # a second import of the same name is refused and leaves the first intact
    with pytest.raises(DatasetError, match="already exists"):
        import_dataset(src, "colours", root=root)
    with pytest.raises(DatasetError, match="built-in"):
        import_dataset(src, "mnist5k", root=root)
    assert ds.load_dataset("colours", root).images.shape[0] == 6


def test_import_refuses_a_single_class(tmp_path):
    src = tmp_path / "one"
    _write_class_folders(src, {"only": (0, 255, 0)})
    with pytest.raises(DatasetError, match="single class"):
        import_dataset(src, "one", root=tmp_path / "home")
    assert not (tmp_path / "home" / "datasets" / "one").exists()
