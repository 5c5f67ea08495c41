"""core/features.py: cached prefix features (computed once, memory-mapped) and the input sources."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from core import backbones as bb
from core import datasets as ds
from core.features import CachedSource, ImageSource, cached_prefix_features, pick_views

from helpers import one_torch_thread

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


class CountingPrefix(nn.Module):
    """Wraps the real prefix and counts the images it is asked to encode."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return self.inner(x)


@pytest.fixture(scope="module")
def setup(_session_home):
    data = ds.load_dataset("digits", _session_home)
    split = ds.splits(data, n_per_class=3, eval_per_class=2, seed=0)["train"]  # 30 images
    backbone = bb.create_backbone("test_vit", trainable=2).eval()
    prefix, suffix, key = backbone.split_image()
    return backbone, split, prefix, suffix, key


def test_second_call_hits_the_cache(setup, tmp_path):
    backbone, split, prefix, _, key = setup
    counting = CountingPrefix(prefix)
    progress = []
    first = cached_prefix_features(counting, key, split, backbone.preprocess, 3, CPU, tmp_path, batch_size=8,
                                   on_progress=lambda d, t: progress.append((d, t)))
    assert counting.images == 3 * 30 and progress[-1] == (90, 90)
    files = sorted((tmp_path / "features").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no temp files left behind
    mtime = files[0].stat().st_mtime_ns

    second = cached_prefix_features(counting, key, split, backbone.preprocess, 3, CPU, tmp_path, batch_size=8)
    assert counting.images == 90  # not recomputed
    assert isinstance(second, np.memmap) and str(second.filename) == str(files[0])
    assert files[0].stat().st_mtime_ns == mtime
    assert second.dtype == np.float16 and second.shape == (3, 30, *first.shape[2:])
    assert np.array_equal(np.asarray(first), np.asarray(second))

    # a different number of views, split or transform is a different cache entry
    cached_prefix_features(counting, key, split, backbone.preprocess, 1, CPU, tmp_path)
    assert counting.images == 90 + 30 and len(list((tmp_path / "features").iterdir())) == 2


def test_views_differ_and_view_zero_equals_eval_features(setup, tmp_path):
    backbone, split, prefix, suffix, key = setup
    feats = np.array(cached_prefix_features(prefix, key, split, backbone.preprocess, 3, CPU, tmp_path))  # a writable copy
    with torch.no_grad():
        clean = prefix(backbone.preprocess.eval(torch.from_numpy(split.images))).to(torch.float16).numpy()
    assert np.array_equal(feats[0], clean)
    assert not np.allclose(feats[1], feats[0], atol=1e-2)
    assert not np.allclose(feats[2], feats[1], atol=1e-2)
    # the suffix on cached view 0 is the backbone's embedding, up to float16 storage
    with torch.no_grad():
        from_cache = suffix(torch.from_numpy(feats[0]).float())
        direct = backbone.encode_image(backbone.preprocess.eval(torch.from_numpy(split.images)))
    torch.testing.assert_close(from_cache, direct, atol=2e-2, rtol=2e-2)


def test_a_torn_cache_file_is_rebuilt(setup, tmp_path):
    backbone, split, prefix, _, key = setup
    cached_prefix_features(prefix, key, split, backbone.preprocess, 1, CPU, tmp_path)
    (path,) = (tmp_path / "features").iterdir()
    path.write_bytes(b"\x93NUMPY torn")
    counting = CountingPrefix(prefix)
    again = cached_prefix_features(counting, key, split, backbone.preprocess, 1, CPU, tmp_path)
    assert counting.images == 30 and again.shape[:2] == (1, 30)


def test_sources_serve_the_same_view_zero(setup, tmp_path):
    backbone, split, prefix, _, key = setup
    feats = cached_prefix_features(prefix, key, split, backbone.preprocess, 2, CPU, tmp_path)
    cached, images = CachedSource(feats, CPU), ImageSource(split, backbone.preprocess, CPU)
    rows = torch.tensor([4, 0, 7])
    assert cached.n_views == 2 and images.n_views is None
    with torch.no_grad():
        from_images = prefix(images.get(rows, 0))
    torch.testing.assert_close(cached.get(rows, 0), from_images, atol=1e-2, rtol=1e-2)
    g = torch.Generator().manual_seed(0)
    a, b = images.get(rows, 1, g), images.get(rows, 1, g)
    assert not torch.equal(a, b)  # image sources draw fresh augmentations every time


def test_pick_views():
    g = torch.Generator().manual_seed(0)
    assert pick_views(2, None, g) == [1, 2]  # images: fresh augmentations
    assert pick_views(2, 1, g) == [0, 0]  # no bank cached (clean view only): reuse it
    assert set(pick_views(2, 2, g)) == {1}  # a bank of one augmented view: drawn twice, never the clean view
    views = pick_views(2, 3, g)
    assert len(set(views)) == 2 and set(views) == {1, 2}


def test_cached_views_are_drawn_from_the_bank_never_forcing_the_clean_view():
    """n_views = 1 + K: every step draws two distinct bank views (1..K); view 0 is for evaluation only."""
    g = torch.Generator().manual_seed(0)
    draws = [tuple(pick_views(2, 5, g)) for _ in range(300)]
    assert all(a != b and 0 not in (a, b) for a, b in draws)
    assert {frozenset(d) for d in draws} == {frozenset(p) for p in [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]}
    again = torch.Generator().manual_seed(0)
    assert [tuple(pick_views(2, 5, again)) for _ in range(300)] == draws  # the run's seed makes it reproducible
    other = torch.Generator().manual_seed(1)
    assert [tuple(pick_views(2, 5, other)) for _ in range(300)] != draws
    g = torch.Generator().manual_seed(0)
    assert all(pick_views(1, 5, g)[0] != 0 for _ in range(100))  # CE / FLYP: one random bank view, not the clean one


def test_two_seeds_draw_different_banks_and_one_seed_the_same(setup, tmp_path):
    backbone, split, prefix, _, key = setup
    a = np.array(cached_prefix_features(prefix, key, split, backbone.preprocess, 4, CPU, tmp_path / "a", seed=0))
    same = np.array(cached_prefix_features(prefix, key, split, backbone.preprocess, 4, CPU, tmp_path / "b", seed=0))
    b = np.array(cached_prefix_features(prefix, key, split, backbone.preprocess, 4, CPU, tmp_path / "a", seed=1))
    assert np.array_equal(a, same)  # reproducible: the bank depends on the seed and the inputs only
    assert np.array_equal(a[0], b[0])  # the clean eval view is the same
    for v in range(1, 4):
        assert not np.allclose(a[v], b[v], atol=1e-2)  # every augmented view differs between seeds
    assert len(list((tmp_path / "a" / "features").iterdir())) == 2  # the seed is part of the cache key
    counting = CountingPrefix(prefix)
    cached_prefix_features(counting, key, split, backbone.preprocess, 4, CPU, tmp_path / "a", seed=1)
    assert counting.images == 0  # the same seed and inputs share the cached bank
    # a clean-only cache (val / test) does not depend on the seed: shared by every run
    cached_prefix_features(prefix, key, split, backbone.preprocess, 1, CPU, tmp_path / "c", seed=0)
    cached_prefix_features(counting, key, split, backbone.preprocess, 1, CPU, tmp_path / "c", seed=5)
    assert counting.images == 0
