"""core/shifts.py: the shifted (OOD) test split is deterministic, documented and really shifted."""
import numpy as np
import pytest

from core import datasets as ds
from core import shifts
from core.errors import InvalidConfig, UnknownName


@pytest.fixture(scope="module")
def digits():
    data = ds.load_dataset("digits")
    return data, ds.splits(data, n_per_class=None, eval_per_class=None)


def test_the_shifted_split_is_the_same_bytes_twice_and_per_image(digits):
    data, parts = digits
    test = parts["test"]
    a, b = shifts.shifted_split(test, "default"), shifts.shifted_split(test, "default")
    assert a.name == "ood" and np.array_equal(a.ids, test.ids) and np.array_equal(a.labels, test.labels)
    assert a.images.dtype == np.uint8 and a.images.shape == test.images.shape
    assert a.images.tobytes() == b.images.tobytes()
    # seeded by sample id, not by position or a global RNG: a subset (another eval_per_class) gets the same pixels
    np.random.seed(123)
    small = ds.splits(data, n_per_class=None, eval_per_class=5)["test"]
    sub = shifts.shifted_split(small, "default")
    pos = {int(i): k for k, i in enumerate(test.ids)}
    assert sub.images.tobytes() == a.images[[pos[int(i)] for i in small.ids]].tobytes()
    # the lazy view used for thumbnails shows the same pixels
    view = shifts.shifted_view(data, "mix:3")
    assert view.images[list(small.ids)].tobytes() == sub.images.tobytes()
    assert view.images[int(small.ids[0])].tobytes() == sub.images[0].tobytes()


def test_every_corruption_changes_the_images_more_at_higher_severity(digits):
    _, parts = digits
    clean = parts["test"].images.astype(np.float64)
    for name in shifts.CORRUPTIONS:
        dist = [np.abs(shifts.shifted_split(parts["test"], f"{name}:{s}").images - clean).mean() for s in (1, 3, 5)]
        assert 0 < dist[0] < dist[1] < dist[2], (name, dist)


def test_the_mix_uses_every_corruption_and_keeps_its_own_cache_key(digits):
    _, parts = digits
    test = parts["test"]
    mix = shifts.shifted_split(test, "mix:3").images
    hits = {name: int(np.sum(np.all(mix == shifts.shifted_split(test, f"{name}:3").images, axis=(1, 2, 3))))
            for name in shifts.CORRUPTIONS}
    assert all(n > 10 for n in hits.values()), hits  # ~54 each of 269
    fingerprints = {test.data.fingerprint, shifts.shifted_split(test, "mix:3").data.fingerprint,
                    shifts.shifted_split(test, "mix:4").data.fingerprint, shifts.shifted_split(test, "jpeg:3").data.fingerprint}
    assert len(fingerprints) == 4  # cached OOD features never collide with the test split's or another shift's


@pytest.mark.slow  # 4.6 s
def test_a_fixed_classifier_loses_accuracy_on_the_shifted_split(digits):
    """Logistic regression on raw pixels: ~95 % on clean test, far less under the default mix."""
    from sklearn.linear_model import LogisticRegression

    _, parts = digits
    flat = lambda split: split.images.reshape(len(split), -1) / 255.0  # noqa: E731
    clf = LogisticRegression(max_iter=2000).fit(flat(parts["train"]), parts["train"].labels)
    clean = clf.score(flat(parts["test"]), parts["test"].labels)
    shifted = clf.score(flat(shifts.shifted_split(parts["test"], "default")), parts["test"].labels)
    assert clean > 0.9 and shifted < clean - 0.15, (clean, shifted)


def test_mnist_stripes_defaults_to_its_natural_shift():
    data = ds.load_dataset("mnist-stripes")
    test = ds.splits(data, n_per_class=10, eval_per_class=10)["test"]
    assert shifts.resolve("default", "mnist-stripes").name == "natural"
    ood = shifts.shifted_split(test, "default")
    assert ood.images.tobytes() == test.images.tobytes()  # its test split is the shifted one: yellow stripes
    yellow = (ood.images[..., 0] > 150) & (ood.images[..., 2] < 100)  # stripe pixels: red and green up, blue down
    assert yellow.any(axis=(1, 2)).mean() > 0.9
    assert shifts.resolve("default", "fashion-mnist").name == "mix:3"
    assert shifts.shifted_split(test, "gaussian_blur:2").images.tobytes() != test.images.tobytes()


@pytest.mark.parametrize("shift, error, message", [
    ("fog", UnknownName, "unknown shift 'fog'"),
    ("jpeg:9", InvalidConfig, "severity must be in 1..5"),
    ("jpeg:x", InvalidConfig, "whole number"),
    ("natural", InvalidConfig, "has no natural shift"),
])
def test_bad_shift_names_are_one_clear_line(shift, error, message):
    with pytest.raises(error, match=message):
        shifts.resolve(shift, "digits")
