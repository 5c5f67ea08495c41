"""The offline pretrained default: EfficientNet-Lite0 ImageNet features, the MiniLM text tower, the bridge.

These need Debian's dataset-fashion-mnist (`make test` installs it as root); without it they skip.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import datasets as ds
from core.backbones import create_backbone
from core.lite0_minilm import BRIDGE_DESCRIPTION, translate_lite0_key
from core.metrics import linear_probe_accuracy
from core.objectives import PROMPT_TEMPLATES
from core.store import RunStore
from core.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not (ds.DEBIAN_FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def fashion():
    data = ds.load_dataset("fashion-mnist")
    parts = ds.splits(data, n_per_class=30, eval_per_class=30, seed=0)
    return data, parts


@torch.inference_mode()
def _features(backbone, split, batch=128) -> np.ndarray:
    backbone.eval()
    x = torch.from_numpy(np.ascontiguousarray(split.images))
    return torch.cat([backbone.encode_image(backbone.preprocess.eval(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def test_translated_keys_follow_timm_naming():
    assert translate_lite0_key("_conv_stem.weight") == "conv_stem.weight"
    assert translate_lite0_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert translate_lite0_key("_blocks.3._bn0.running_mean") == "blocks.2.0.bn1.running_mean"
    assert translate_lite0_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert translate_lite0_key("_fc.bias") == "classifier.bias"


@pytest.mark.slow  # 72 s
def test_pretrained_features_probe_far_better_than_random_init(fashion):
    """Linear probe on 300 train / 300 test images: ImageNet features vs the same net at random init."""
    data, parts = fashion
    scores = {}
    for weights in ("pretrained", "random"):
        backbone = create_backbone("efficientnet_lite0", weights=weights, image_size=64, trainable="frozen")
        x = np.concatenate([_features(backbone, parts["train"]), _features(backbone, parts["test"])])
        y = np.concatenate([parts["train"].labels, parts["test"].labels])
        scores[weights] = linear_probe_accuracy(x, y, test_size=0.5, seed=0)
    assert scores["pretrained"] > scores["random"] + 0.08, scores  # measured: 0.71 vs 0.56
    assert scores["pretrained"] > 0.65, scores


@pytest.mark.slow  # 3.1 s
def test_the_bridge_is_a_real_zero_shot_classifier(fashion):
    """Image -> ImageNet probabilities -> MiniLM class-name embeddings vs prompt embeddings: above chance (0.10)."""
    data, parts = fashion
    model = create_backbone("lite0-minilm", trainable="frozen").eval()
    assert "not a jointly pre-trained CLIP" in BRIDGE_DESCRIPTION
    with torch.inference_mode():
        text = torch.stack([F.normalize(model.encode_text(model.tokenize([t.format(c) for c in data.prompt_names])), dim=-1)
                            for t in PROMPT_TEMPLATES]).mean(0)
        image = F.normalize(torch.from_numpy(_features(model, parts["test"])), dim=-1)
    acc = float(((image @ F.normalize(text, dim=-1).T).argmax(-1).numpy() == parts["test"].labels).mean())
    assert acc > 0.14, acc  # measured about 0.18 on 300 images


def test_the_residual_map_starts_at_zero():
    model = create_backbone("lite0-minilm")
    assert torch.count_nonzero(model.visual.residual.weight) == 0 and torch.count_nonzero(model.visual.residual.bias) == 0


@pytest.mark.slow  # 11 s
def test_flyp_on_lite0_minilm_beats_its_zero_shot_start(tmp_path):
    result = train(TrainConfig(objective="flyp", backbone="lite0-minilm", dataset="fashion-mnist", steps=20,
                               n_per_class=20, eval_per_class=10, batch_size=32, eval_every=20),
                   store=RunStore(tmp_path))
    assert result["status"] == "finished", result["error"]
    assert result["zeroshot_acc"] > 0.1
    assert result["val_acc"] > result["zeroshot_acc"] + 0.15, result
    assert [p["alpha"] for p in result["wise_ft"]] == pytest.approx(np.linspace(0, 1, 11).tolist())


@pytest.mark.slow  # 4.6 s
def test_a_weights_file_loads_into_the_image_tower(home):
    """A registry backbone with a weights file: built on a random init, then the file goes over it
    (the file's path once ended up in the bridge's cache file name and crashed)."""
    from safetensors.torch import save_file

    source = create_backbone("lite0-minilm", weights="random")
    tower = {k: v + 0.5 if v.is_floating_point() else v for k, v in source.image_tower().state_dict().items()}
    path = home / "weights" / "tuned.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in tower.items()}, str(path))
    loaded = create_backbone("lite0-minilm", weights=str(path))
    assert loaded.weights_id.startswith("file:")
    got = loaded.image_tower().state_dict()
    assert all(torch.equal(got[k], v) for k, v in tower.items())
