"""ImageFolder trees (`imagefolder`, `imagenet`): train/ and test/ (else val/) class folders, decoded once into a uint8
.npy cache keyed by the folder's path, file count, total bytes and newest modification time, chunk by chunk within
the dataset's memory budget (a tree larger than memory is read back from that file batch by batch: data.py); an
image that cannot be decoded is named."""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from joblib import cpu_count
from PIL import Image

from ..data import DataSource, RawDataset, memory_budget_bytes
from ..disk_images import write_npy_in_chunks
from ..errors import DataFileError, first_line
from ..store import atomic_write, stable_hash
from .registration import register

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# how `imagenet` decodes, in its cache keys: its images before this (rounding the long side, flooring the crop's
# offset) were 1 px off torchvision's transform for about half of ImageNet's aspect ratios
CROP = "torchvision resize 256, centre crop 224"


# --- ImageFolder trees, decoded once into a uint8 cache ------------------------------------------


def _decode(path: str, image_size: int | None, center_crop: bool) -> np.ndarray:
    """One image as uint8 [H, W, 3]; one that cannot be decoded is a DataFileError naming it (decoded once, here)."""
    try:
        return _decode_image(path, image_size, center_crop)
    except Exception as exc:  # PIL's errors name neither the file nor, often, the problem plainly
        if isinstance(exc, Image.UnidentifiedImageError):
            reason = "its bytes are in no image format PIL reads"
        else:
            reason = first_line(exc).replace(f" '{path}'", "").replace(f" {path}", "")
        raise DataFileError(f"Image {path} cannot be decoded ({reason}); replace or delete it.") from exc


def _decode_image(path: str, image_size: int | None, center_crop: bool) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if image_size and center_crop:  # torchvision's Resize(256) + CenterCrop(224), pixel for pixel
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as tf

            img = tf.resize(img, round(image_size * 256 / 224), InterpolationMode.BILINEAR)
            img = tf.center_crop(img, [image_size, image_size])
        elif image_size and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def decoder_identity() -> str:
    """What decoded pixels depend on besides the files and the size: this decoding code and the versions of Pillow
    (its JPEG and PNG decoders) and torchvision (the resize `imagenet` uses). In the decoded cache's key and the
    dataset's identity, so that another decoder re-decodes and keys other models instead of serving old pixels."""
    import PIL
    import torchvision

    return stable_hash({"code": inspect.getsource(_decode_image), "pillow": PIL.__version__,
                        "torchvision": torchvision.__version__})


def decode_image_folder(folder: Path, cache_dir: Path, image_size: int | None, center_crop: bool = False,
                       budget_bytes: int = 2**30, signature: dict | None = None):
    """Decode `folder`/<class>/<image> into (uint8 [N, H, W, 3] memory-mapped from the cache, labels, classes), cached
    as .npy by content key; decoding holds at most about `budget_bytes` of images at a time. `signature`: the
    folder's `folder_signature` as just scanned, which keys the cache instead of a second stat of every file: its
    file count is checked against the files listed now, and the whole signature before decoding into a new cache
    file (one stat a file beside the decoding), so files changed since the scan are refused, not cached under it."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:  # (torchvision: "'class_to_index' must have at least one entry to collect any samples")
        raise DataFileError(f"Image folder {folder} holds no class folders: expected {folder}/<class>/<image>.")
    try:
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without images: "Found no valid file for the classes ..."
        raise DataFileError(f"Image folder {folder} is incomplete: {first_line(exc).split('. ')[0]}.") from exc
    if not samples:
        raise DataFileError(f"Image folder {folder} holds no class folder with images.")
    if signature is not None and signature["n"] != len(samples):
        raise _changed(folder, f"{signature['n']} files when scanned, {len(samples)} now")
    signed = signature or files_signature((p for p, _ in samples), folder)  # the list just read: no second walk
    key = stable_hash({"folder": str(folder.resolve()), **signed, "size": image_size,
                       "crop": CROP if center_crop else False, "decoder": decoder_identity()})
    target = cache_dir / "data" / f"{folder.name}-{key}"
    images_file, labels_file = target.with_suffix(".images.npy"), target.with_suffix(".labels.npy")
    labels = np.array([label for _, label in samples], dtype=np.int64)
    if not images_file.exists():
        if signature is not None and files_signature((p for p, _ in samples), folder) != signature:
            raise _changed(folder, "an image rewritten")  # decoded under the scan's key, it would be served for it
        paths = [p for p, _ in samples]
        row_shape = _decode(paths[0], image_size, center_crop).shape  # every image must decode to this shape
        # a chunk is held twice (decoded images, then stacked): a quarter of the budget each leaves room to train
        per_chunk = int(max(1, min(1024, budget_bytes // (4 * np.prod(row_shape)))))
        # threads of concurrent.futures: joblib's threading backend builds a multiprocessing pool whose queue locks
        # are named semaphores in a worker process, which a stopped run (its workers killed) leaked, and the
        # resource tracker warned about them after the one-line message
        with ThreadPoolExecutor(max_workers=cpu_count()) as pool:
            chunks = (_stack(list(pool.map(lambda p: _decode(p, image_size, center_crop),
                                           paths[start:start + per_chunk])), row_shape, folder)
                      for start in range(0, len(paths), per_chunk))
            atomic_save_npy(labels_file, labels)  # first: a worker that sees the images finds their labels
            write_npy_in_chunks(images_file, len(paths), row_shape, chunks)
    try:
        images, cached_labels = np.load(images_file, mmap_mode="r"), np.load(labels_file)
    except (OSError, ValueError, EOFError) as exc:
        # (numpy's ValueError for a damaged header suggests loading with allow_pickle=True: not advice to pass on)
        why = "not a readable .npy file" if isinstance(exc, ValueError) else first_line(exc)
        raise DataFileError(f"The decoded image cache {images_file.parent} of {folder} is damaged "
                            f"({why}); delete {images_file.name} and {labels_file.name} to decode the "
                            f"images again.") from exc
    if len(images) != len(labels) or not np.array_equal(cached_labels, labels):
        raise DataFileError(f"The decoded image cache {images_file} does not match {folder}; delete it to decode "
                            f"the images again.")
    return images, labels, classes


def _changed(folder: Path, how: str) -> DataFileError:
    return DataFileError(f"The images under {folder} changed while this run was loading them ({how}); run it again.")


def decode_splits(train_dir: Path, test_dir: Path, cache_dir: Path, image_size: int | None, center_crop: bool = False,
                  budget_bytes: int = 2**30, signatures: tuple[dict | None, dict | None] = (None, None)):
    """`decode_image_folder` of a tree's training and held-out splits (with their `signatures` as scanned, where
    given): (x_train, y_train, x_test, y_test, classes). Each split is labelled from its own class folders, so they
    must be the same folders (a missing one would shift every later class's labels): `class_folder_problem`,
    checked before either is decoded."""
    problem = class_folder_problem(train_dir, test_dir)
    if problem:
        raise DataFileError(problem)
    x_train, y_train, classes = decode_image_folder(train_dir, cache_dir, image_size, center_crop, budget_bytes,
                                                    signatures[0])
    x_test, y_test, _ = decode_image_folder(test_dir, cache_dir, image_size, center_crop, budget_bytes, signatures[1])
    return x_train, y_train, x_test, y_test, classes


def folder_signature(folder: Path) -> dict:
    """`files_signature` of the files torchvision's make_dataset reads under `folder`/<class>/ (the dataset's
    identity; the decoder signs the list make_dataset gave it)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(e.path for e in os.scandir(folder) if e.is_dir())
    return files_signature((os.path.join(root, name) for entry in classes
                            for root, _, names in os.walk(entry, followlinks=True)
                            for name in names if name.lower().endswith(IMG_EXTENSIONS)), folder)


def files_signature(paths, folder: Path | str) -> dict:
    """{'n': files, 'bytes': their total size, 'mtime': the newest one's modification time, 'files': a digest of
    every file's path under `folder` (the split's), size and modification time (ns), summed so that the walk's
    order does not matter} of `paths`: what says the images changed, in the decoded cache's key and the dataset's
    identity (a stat a file; sums, not 1.28 M stat results held at once). 'files' sees what the others cannot: an
    image moved to another class folder (relabelled), or replaced by one of the same size and an older time
    (`cp -p`, `rsync -a`); the same tree reached by another spelling of its path gives the same signature."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    n, total, newest, files = 0, 0, 0.0, 0
    for path in paths:
        stat = os.stat(path)
        n, total, newest = n + 1, total + stat.st_size, max(newest, stat.st_mtime)
        entry = f"{path.removeprefix(prefix)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
        files = (files + int.from_bytes(hashlib.blake2b(entry, digest_size=8).digest(), "little")) % 2**64
    return {"n": n, "bytes": total, "mtime": newest, "files": f"{files:016x}"}


def _stack(decoded: list[np.ndarray], row_shape: tuple, folder: Path) -> np.ndarray:
    shapes = {a.shape for a in decoded} | {row_shape}
    if len(shapes) != 1:
        raise DataFileError(f"Images under {folder} have different sizes {sorted(shapes)[:3]}; set the "
                            f"image_size option.")
    return np.stack(decoded)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` as .npy, whole or not at all (`store.atomic_write`)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def tree_splits(tree: Path) -> tuple[Path, Path] | None:
    """(train/, the held-out split) of an ImageFolder tree: test/ where it holds class folders, else val/
    (ImageNet's layout, whose validation set is the paper's test set, and whose test/ is one folder of unlabelled
    images), else test/; None without train/ and one of them. Validation is carved from train/ (or `val_from:
    test`), so a val/ beside a test/ of class folders is not read."""
    test, val = tree / "test", tree / "val"
    held_out = test if not val.is_dir() or _has_folders(test) else val  # test/ is scanned only beside a val/
    return (tree / "train", held_out) if (tree / "train").is_dir() and held_out.is_dir() else None


def _has_folders(path: Path) -> bool:
    try:
        return any(e.is_dir() for e in os.scandir(path))
    except OSError:
        return False


def class_folder_problem(train_dir: Path, test_dir: Path) -> str | None:
    """One sentence where a tree's two splits are not both <split>/<class>/<image> folders of the same classes, read
    from one directory scan each (before anything is decoded); None where they are."""
    classes = {d: {e.name for e in os.scandir(d) if e.is_dir()} for d in (train_dir, test_dir)}
    for folder, names in classes.items():
        if not names:
            hint = "" if folder == train_dir else (f" (ImageNet's validation images come in one folder: sort them "
                                                    f"into {folder}/<wnid>/ folders first)")
            return f"{folder} holds no class folders: expected {folder}/<class>/<image>{hint}."
    only = [(d, sorted(classes[d] - classes[other])) for d, other in ((train_dir, test_dir), (test_dir, train_dir))]
    if any(names for _, names in only):
        return (f"Class folders differ between {train_dir} and {test_dir}: "
                + "; ".join(f"{_listed(names)} only in {d.name}/" for d, names in only if names) + ".")
    return None


def _listed(names: list[str], first: int = 5) -> str:
    return ", ".join(names[:first]) + (f" and {len(names) - first} more" if len(names) > first else "")


def _tree_path(source: DataSource, subfolder: str | None) -> Path | None:
    if "path" in source.options:
        return Path(source.options["path"]).expanduser()
    if source.root is None:
        return None
    if subfolder and (source.root / subfolder).is_dir():
        return source.root / subfolder
    return source.root


def _imagefolder(name: str, subfolder: str | None, default_size: int | None, center_crop: bool):
    def missing(source: DataSource) -> str | None:
        tree = _tree_path(source, subfolder)
        if tree is None:
            return f"Dataset '{name}' needs --data-root (or a 'path' option) pointing at a tree with train/ and test/ or val/."
        splits = tree_splits(tree)
        if not splits:
            return f"Dataset '{name}' not found: expected {tree}/train/<class>/ and {tree}/test/ (or val/) image folders."
        return class_folder_problem(*splits)

    def load(source: DataSource) -> RawDataset:
        train_dir, test_dir = tree_splits(_tree_path(source, subfolder))
        size, budget = source.options.get("image_size", default_size), memory_budget_bytes(source.options)
        scanned = (source.files["train"], source.files["test"]) if source.files else (None, None)
        x_train, y_train, x_test, y_test, classes = decode_splits(train_dir, test_dir, source.cache_dir, size,
                                                                  center_crop, budget, scanned)
        return RawDataset(x_train, y_train, x_test, y_test, classes, *IMAGENET_STATS,
                          augment=source.options.get("augment", "crop_flip"))

    def count_classes(source: DataSource) -> int:
        """The class folders of train/ (one directory scan: planning needs no image decoded)."""
        train_dir, _ = tree_splits(_tree_path(source, subfolder))
        return sum(1 for e in os.scandir(train_dir) if e.is_dir())

    def identity(source: DataSource) -> dict:
        """The tree's resolved place, its class folders and the signature of each split's images (folder_signature:
        a stat a file), so that other images in the same place key other cells and stage models."""
        tree = _tree_path(source, subfolder).resolve()
        train_dir, test_dir = tree_splits(tree)
        return {"tree": str(tree), "classes": sorted(e.name for e in os.scandir(train_dir) if e.is_dir()),
                **{split: folder_signature(d) for split, d in (("train", train_dir), ("test", test_dir))},
                **({"decode": CROP} if center_crop else {}), "decoder": decoder_identity()}

    def count_images(source: DataSource) -> tuple[int, int, tuple | None]:
        """(training images, test images, decoded shape) from a scan of the tree's file names; the shape is the
        image_size option's, else the first training image's header's (None where it cannot be read)."""
        train_dir, test_dir = tree_splits(_tree_path(source, subfolder))
        counts = [sum(class_file_counts(d)[1]) for d in (train_dir, test_dir)]
        size = source.options.get("image_size", default_size)
        if size:
            return (*counts, (size, size, 3))
        first = min(train_dir.glob("*/*"), default=None)
        try:
            with Image.open(first) as img:
                return (*counts, (img.height, img.width, 3))
        except (OSError, TypeError, AttributeError):
            return (*counts, None)

    def count_per_class(source: DataSource) -> tuple | None:
        """(classes, training and test images per class) from a scan of the tree's file names; None where the two
        splits' class folders differ (loading says so)."""
        return split_class_counts(*tree_splits(_tree_path(source, subfolder)))

    return missing, load, count_classes, count_images, identity, count_per_class


def split_class_counts(train_dir: Path, test_dir: Path) -> tuple | None:
    """(classes, training images per class, test images per class) of a tree's two splits, None where their class
    folders differ."""
    (classes, train), (test_classes, test) = class_file_counts(train_dir), class_file_counts(test_dir)
    return (classes, train, test) if classes == test_classes else None


def class_file_counts(folder: Path) -> tuple[list[str], list[int]]:
    """(class folders of `folder`, sorted, and how many files decode_image_folder would read in each: image
    extensions as torchvision's, subfolders included, as its make_dataset walks them)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    return classes, [sum(name.lower().endswith(IMG_EXTENSIONS)
                         for _, _, names in os.walk(folder / c, followlinks=True) for name in names) for c in classes]


_m, _l, _n, _c, _i, _p = _imagefolder("imagefolder", None, None, False)
register("imagefolder", _m, "any ImageFolder tree (train/ + test/, else val/); option image_size resizes", None,
         count_classes=_n, count_images=_c, decodes_to_file=True, identity=_i, count_per_class=_p)(_l)
_m, _l, _n, _c, _i, _p = _imagefolder("imagenet", "imagenet", 224, True)
register("imagenet", _m, "ImageNet-1k (or a subset: the classes are the tree's) as an ImageFolder tree, resized "
         "256 → centre crop 224", 1000, train_images=1281167, count_classes=_n, test_images=50000,
         image_shape=(224, 224, 3), count_images=_c, decodes_to_file=True, identity=_i, count_per_class=_p)(_l)
