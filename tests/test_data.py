import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnbench import UserError
from unlearnbench.data import augment_batch, load_dataset
from unlearnbench.grid import parse_grid


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


def test_mnist5k_is_real_stratified_and_split(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3600, 400, 1000)
    assert mnist5k.train.images.dtype == torch.uint8 and mnist5k.train.images.shape[1:] == (1, 28, 28)
    for split in (mnist5k.train, mnist5k.val, mnist5k.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.min() == counts.max()  # 500 per class, split stratified
    # validation is carved from train: no image is in both
    train = {bytes(x.numpy()) for x in mnist5k.train.images}
    assert not any(bytes(x.numpy()) in train for x in mnist5k.val.images)


def test_training_subset_is_per_class_inside_train_and_named(mnist5k):
    sub = load_dataset("mnist5k", options={"train_per_class": 100})
    assert torch.equal(torch.bincount(sub.train.labels, minlength=10), torch.full((10,), 100))
    assert torch.equal(sub.val.images, mnist5k.val.images) and torch.equal(sub.test.images, mnist5k.test.images)
    train = {bytes(x.numpy()) for x in mnist5k.train.images}
    assert all(bytes(x.numpy()) in train for x in sub.train.images)  # drawn from train, after the val carve
    again = load_dataset("mnist5k", options={"train_per_class": 100})
    assert torch.equal(again.train.images, sub.train.images)  # seeded
    entry = parse_grid({"datasets": [{"name": "mnist5k", "train_per_class": 100}], "backbones": ["vgg16"]}, "t")
    assert entry.datasets[0].label == "mnist5k-100perclass"


def test_forget_and_retain_views_are_disjoint_and_complete(mnist5k):
    for c in range(10):
        forget, retain = mnist5k.test.forget(c), mnist5k.test.retain(c)
        assert (forget.labels == c).all() and (retain.labels != c).all()
        assert len(forget) + len(retain) == len(mnist5k.test)
        assert len(forget) == int((mnist5k.test.labels == c).sum())


def test_batches_cover_every_sample_once_and_normalise(mnist5k):
    seen = []
    for x, y in mnist5k.batches(mnist5k.test, 300, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32
        seen.append(y)
    assert torch.equal(torch.cat(seen).sort().values, mnist5k.test.labels.sort().values)
    x, _ = next(mnist5k.batches(mnist5k.test, 1000))
    assert abs(x.mean().item()) < 0.2 and abs(x.std().item() - 1) < 0.2


def test_batches_have_plain_nchw_strides(mnist5k):
    """One-channel images must not keep channels-last strides (they pass is_contiguous() but make CPU
    convolutions take the slower channels-last path)."""
    x, _ = next(mnist5k.batches(mnist5k.train, 8, shuffle=True))
    assert x.stride() == torch.empty(x.shape).stride() == (784, 784, 28, 1)
    assert mnist5k.train.images.stride() == torch.empty(mnist5k.train.images.shape).stride()


def test_augmentation_translates_and_flips_on_device():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    out = augment_batch(images, "crop_flip", torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # every output is the input shifted (reflect-padded) and maybe mirrored: its centre pixels come from the input
    assert set(out[0].flatten().tolist()) <= set(images[0].flatten().tolist())
    assert not torch.equal(out, images)


def test_missing_data_names_the_files_expected(tmp_path):
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.*--data-root"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(UserError, match=r"cifar10-jpeg"):
        load_dataset("cifar10", root=tmp_path)


def _write_tree(root, classes=("ant", "bee", "cat"), per_class=4, size=12):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagefolder_decodes_once_into_a_cache(tmp_path):
    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=cache, val_fraction=0.25)
    assert first.classes == ["ant", "bee", "cat"] and first.image_size == 12
    cached = sorted((cache / "data").glob("*.npy"))
    assert len(cached) == 4  # images + labels for train and test
    stamps = [p.stat().st_mtime_ns for p in cached]
    second = load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=cache, val_fraction=0.25)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # served from the cache, not decoded again
    assert torch.equal(first.train.images, second.train.images)
    resized = load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=cache, options={"image_size": 8})
    assert resized.image_size == 8


def test_cifar10_from_a_jpeg_tarball_is_extracted_once(tmp_path):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_tree(tmp_path / "src" / "cifar10-jpeg", classes, per_class=3, size=32)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
    data = load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.34)
    assert data.classes == classes and data.channels == 3 and data.image_size == 32
    assert len(data.test) == 30 and data.augment == "crop_flip"
    assert (tmp_path / "cache" / "data" / "cifar10-jpeg" / "train" / "cat").is_dir()
