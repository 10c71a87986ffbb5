"""CIFAR-10 (`cifar10`): torchvision's python release (every pickle checked: keys, shapes, labels, md5) or the JPEG
ImageFolder copy, from a tree or from its tarball (extracted once per tarball content)."""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from ..data import DataSource, RawDataset
from ..errors import DataFileError, first_line
from ..seeds import file_digest
from ..store import give_umask_mode, partial_prefix
from .image_folder import (class_folder_problem, decode_splits, decoder_identity, folder_signature, split_class_counts,
                           tree_splits)
from .registration import register

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


# --- CIFAR-10: torchvision pickles, or the JPEG ImageFolder copy (tarball extracted once) ---------

CIFAR_TARBALL = "cifar10-jpeg.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
EXTRACTED = re.compile(r"cifar10-jpeg-([0-9a-f]{64})")  # a tarball's copy in the cache, named by its digest
SOURCES = "extracted-from.txt"  # in a copy: the tarballs it stands in for where they are gone
EXTRACTED_FILES = "extracted-files.json"  # in a copy: its splits' folder_signature as extracted (`check_intact`)
CIFAR_TRAIN = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
CIFAR_MD5 = {  # the original release's files, as torchvision checks them
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def _read_cifar_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """Unpickle one file of the CIFAR-10 python release, checking that it holds `keys`; its md5 under '_md5'."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataFileError(f"CIFAR-10 file {path} is missing; copy the whole {CIFAR_FOLDER}/ folder again.") from exc
    except OSError as exc:
        raise DataFileError(f"CIFAR-10 file {path} cannot be read ({first_line(exc)}).") from exc
    try:
        entry = pickle.loads(blob, encoding="latin1")
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... for a truncated or overwritten file
        raise DataFileError(f"CIFAR-10 file {path} is truncated or corrupt: unpickling its {len(blob)} bytes failed "
                            f"({exc.__class__.__name__}: {first_line(exc)}).") from exc
    absent = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if absent:
        raise DataFileError(f"CIFAR-10 file {path} is not a CIFAR-10 batch: it lacks the key(s) {', '.join(absent)}.")
    entry["_md5"] = hashlib.md5(blob).hexdigest()
    return entry


def _check_cifar_md5(path: Path, entry: dict) -> None:
    expected = CIFAR_MD5.get(path.name)
    if expected and entry["_md5"] != expected:
        raise DataFileError(f"CIFAR-10 file {path} differs from the original release (md5 {entry['_md5']}, "
                            f"expected {expected}); replace it with a fresh copy.")


def _cifar_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 32, 32, 3] and int64 labels of the CIFAR-10 batches `names` in `folder`, each checked."""
    images, labels = [], []
    for name in names:
        path = folder / name
        entry = _read_cifar_pickle(path, ("data", "labels"))
        data, y = entry["data"], np.asarray(entry["labels"])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataFileError(f"CIFAR-10 file {path} holds data of shape {getattr(data, 'shape', '?')} and type "
                                f"{getattr(data, 'dtype', type(data).__name__)}, expected uint8 rows of 3072 values.")
        if (y.shape != (len(data),) or not np.issubdtype(y.dtype, np.integer)
                or (len(y) and not 0 <= y.min() <= y.max() < 10)):
            raise DataFileError(f"CIFAR-10 file {path} holds {len(data)} images but labels of shape {y.shape} and "
                                f"type {y.dtype}, expected {len(data)} integers in 0…9.")
        _check_cifar_md5(path, entry)
        images.append(data)
        labels.append(y.astype(np.int64))
    return np.vstack(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.concatenate(labels)


def read_cifar_pickles(root: Path) -> RawDataset:
    """CIFAR-10 from torchvision's python release in `root`/cifar-10-batches-py, every file checked (unpickling,
    keys, shapes, labels, then the release's md5) before use."""
    folder = root / CIFAR_FOLDER
    meta_path = folder / "batches.meta"
    meta = _read_cifar_pickle(meta_path, ("label_names",))
    classes = meta["label_names"]
    if not isinstance(classes, list) or len(classes) != 10:
        raise DataFileError(f"CIFAR-10 file {meta_path} names {len(classes) if isinstance(classes, list) else 'no'} "
                            f"classes, expected 10.")
    _check_cifar_md5(meta_path, meta)
    x_train, y_train = _cifar_batches(folder, CIFAR_TRAIN)
    x_test, y_test = _cifar_batches(folder, ["test_batch"])
    return RawDataset(x_train, y_train, x_test, y_test, [str(c) for c in classes], *CIFAR_STATS, augment="crop_flip")


def _cifar_source(source: DataSource) -> tuple[str, Path] | None:
    """Where CIFAR-10 can be read from: ('pickle', root), ('jpeg', tree) or ('tarball', file), in this order, else
    ('extracted', tree): the copy last extracted into the cache from this root's tarball, read where it is gone (a
    copy of another root's tarball is not: a mistyped --data-root is not found)."""
    if source.root is not None:
        if (source.root / CIFAR_FOLDER).is_dir():
            return "pickle", source.root
        if tree_splits(source.root / "cifar10-jpeg"):
            return "jpeg", source.root / "cifar10-jpeg"
        tarball = source.root / CIFAR_TARBALL
        if tarball.is_file():
            return "tarball", tarball
        copies = [p for p in (source.cache_dir / "data").glob("cifar10-jpeg-*")
                  if EXTRACTED.fullmatch(p.name) and tree_splits(p) and str(tarball.resolve()) in _extracted_from(p)]
        if copies:
            return "extracted", max(copies, key=lambda p: p.stat().st_ctime)
    return None


def _extracted_from(copy: Path) -> set[str]:
    """The tarballs (resolved paths) extracted into `copy` or found to hold its content (`SOURCES` in it)."""
    try:
        return set((copy / SOURCES).read_text().splitlines())
    except OSError:
        return set()


def _note_source(copy: Path, tarball: Path) -> None:
    if str(tarball.resolve()) not in _extracted_from(copy):
        try:
            with open(copy / SOURCES, "a") as f:  # one short line, appended whole
                f.write(f"{tarball.resolve()}\n")
        except OSError:  # (a read-only cache) the copy is still read; it only cannot stand in for this tarball
            pass


def _split_signatures(copy: Path) -> dict:
    test_dir = _jpeg_test_dir(copy)
    return {"train": folder_signature(copy / "train"), "test": folder_signature(test_dir) if test_dir else None}


def check_intact(copy: Path, tarball: Path) -> dict | None:
    """Refuse, in one sentence, a copy in the cache whose files are no longer those extracted into it (an image
    removed by a cleaner of old files, or one deleted as unreadable): its key is the tarball's digest, so results
    from it would pass for the whole tarball's. Return its splits' signatures as checked (decoding keys its images by
    them: one walk of the files), or None for a copy extracted before copies recorded their files (not checked)."""
    try:
        extracted = json.loads((copy / EXTRACTED_FILES).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        extracted = f"unreadable: {first_line(exc)}"
    now = _split_signatures(copy)
    if extracted != now:
        again = ("delete that folder to extract the tarball again" if tarball.is_file() else
                 f"put its tarball back as {tarball} (it stands in for it, and it is gone), then delete that folder "
                 f"to extract it again")
        raise DataFileError(f"The CIFAR-10 copy extracted into the cache, {copy}, no longer holds the files extracted "
                            f"into it (removed, added or changed since); {again}.")
    return now


def _cifar_missing(source: DataSource) -> str | None:
    found = _cifar_source(source)
    if found and found[0] in ("jpeg", "extracted"):  # a tree: its splits' class folders, as an ImageFolder's
        return class_folder_problem(found[1] / "train", _jpeg_test_dir(found[1]))
    if source.download or found:
        return None
    if source.root is None:
        return (f"Dataset 'cifar10' needs --data-root (a folder holding cifar-10-batches-py/, cifar10-jpeg/ or "
                f"{CIFAR_TARBALL}) or --download.")
    return (f"Dataset 'cifar10' not found under {source.root}: expected cifar-10-batches-py/ (torchvision), "
            f"cifar10-jpeg/{{train,test}}/ or {CIFAR_TARBALL}; point --data-root there or pass --download.")


def _cifar_identity(source: DataSource) -> dict:
    """The torchvision pickles (or a download of them; their md5 is checked: one content) or the JPEG copy: a tree
    by its splits' `folder_signature`, a tarball by its content's digest (which names its copy in the cache, so
    the key stays where the tarball is gone)."""
    found = _cifar_source(source)
    if found is None or found[0] == "pickle":
        return {"format": "pickle"}
    kind, where = found
    decoder = {"decoder": decoder_identity()}  # the JPEG copy is decoded by Pillow
    if kind == "tarball":
        return {"format": "jpeg", "tarball": file_digest(where), **decoder}
    if kind == "extracted":
        return {"format": "jpeg", "tarball": EXTRACTED.fullmatch(where.name)[1], **decoder}
    test_dir = _jpeg_test_dir(where)
    return {"format": "jpeg", "train": folder_signature(where / "train"), "test": folder_signature(test_dir),
            **decoder}


def _cifar_per_class(source: DataSource) -> tuple | None:
    """(classes, training and test images per class) of the files present: the pickles' labels, the JPEG tree's
    file names or the tarball's member names; None before a download, or where loading would refuse the files."""
    found = _cifar_source(source)
    if found is None:
        return None
    kind, where = found
    if kind == "pickle":
        raw = read_cifar_pickles(where)
        return raw.classes, np.bincount(raw.train_labels, minlength=10), np.bincount(raw.test_labels, minlength=10)
    if kind in ("jpeg", "extracted"):
        test_dir = _jpeg_test_dir(where)
        return split_class_counts(where / "train", test_dir) if test_dir else None
    return _tarball_class_counts(where)


def _jpeg_test_dir(tree: Path) -> Path | None:
    """The JPEG copy's held-out split, by the ImageFolder rule (`tree_splits`: test/ of class folders, else val/)."""
    splits = tree_splits(tree)
    return splits[1] if splits else None


def _tarball_class_counts(tarball: Path) -> tuple | None:
    """(classes, training and test images per class) from the member names of the JPEG copy's tarball, read without
    extracting it; None where it cannot be read or its splits' classes differ (extracting or loading says so)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    counts = {"train": Counter(), "test": Counter(), "val": Counter()}
    present = set()  # split folders the archive holds, images or not
    try:
        with tarfile.open(tarball) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts  # …/<split>/<class>/[subfolders/]<image>
                present |= {part for part in parts if part in counts}
                split = next((i for i, part in enumerate(parts[:-2]) if part in counts), None)
                if split is not None and member.isfile() and parts[-1].lower().endswith(IMG_EXTENSIONS):
                    counts[parts[split]][parts[split + 1]] += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        return None  # extracting it says what is wrong
    # as loading reads the extracted copy (`tree_splits`): test/ where it holds class folders, else val/
    held_out = counts["test" if counts["test"] or "val" not in present else "val"]
    classes = sorted(counts["train"])
    if not classes or sorted(held_out) != classes:
        return None
    return classes, [counts["train"][c] for c in classes], [held_out[c] for c in classes]


@register("cifar10", _cifar_missing, "CIFAR-10 via torchvision, or the JPEG ImageFolder copy", train_images=50000,
          test_images=10000, image_shape=(32, 32, 3), identity=_cifar_identity, count_per_class=_cifar_per_class)
def load_cifar10(source: DataSource) -> RawDataset:
    found = _cifar_source(source)
    if found is None:
        import torchvision

        _check_scanned(source, {"format": "pickle"})  # the scan's files gone: a download is not what it keyed
        root = source.cache_dir / "data"
        torchvision.datasets.CIFAR10(root, train=False, download=True)  # fetches (once) the whole release
        return read_cifar_pickles(root)
    kind, where = found
    if kind == "pickle":
        _check_scanned(source, {"format": "pickle"})
        return read_cifar_pickles(where)
    if kind == "tarball":  # a tarball replaced since the scan: refused before extracting it (its digest is memoised)
        _check_scanned(source, {"format": "jpeg", "tarball": file_digest(where), "decoder": decoder_identity()})
        where = extract_once(where, source.cache_dir / "data")
    checked = check_intact(where, source.root / CIFAR_TARBALL) if kind in ("tarball", "extracted") else None
    test_dir = _jpeg_test_dir(where)
    if test_dir is None or not (where / "train").is_dir():
        raise DataFileError(f"The CIFAR-10 JPEG copy {where} needs train/ and test/ (or val/) class folders.")
    digest, scanned = EXTRACTED.fullmatch(where.name), source.files or {}
    read = ({"format": "jpeg", "tarball": digest[1]} if digest else  # a tree: keyed by the scan's signatures
            {"format": "jpeg", "train": scanned.get("train"), "test": scanned.get("test")})
    read["decoder"] = decoder_identity()
    _check_scanned(source, read)
    signatures = (checked["train"], checked["test"]) if checked else (read.get("train"), read.get("test"))
    x_train, y_train, x_test, y_test, classes = decode_splits(where / "train", test_dir, source.cache_dir, 32,
                                                              signatures=signatures)
    return RawDataset(x_train, y_train, x_test, y_test, classes, *CIFAR_STATS, augment="crop_flip")


def _check_scanned(source: DataSource, read: dict) -> None:
    """Refuse to load files other than those the run scanned just before (`source.files`): a tarball replaced, or
    another copy put in its place, in between would be read under the scan's key."""
    if source.files is not None and source.files != read:
        where = f" under {source.root}" if source.root else ""
        raise DataFileError(f"CIFAR-10's files{where} changed while this run was loading them; run it again.")


def _extract_plain_files(tar: tarfile.TarFile, into: Path, tarball: Path) -> None:
    """Extract `tar` into `into` with tarfile's 'data' filter (no member outside `into`, no device, no link out of
    it); Pythons before 3.10.12 and 3.11.4 lack the filter, and there only folders and regular files with relative
    paths inside `into` are accepted, anything else refused in one sentence."""
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(into, filter="data")
        except tarfile.FilterError as exc:  # (a TarError: not "truncated or corrupt")
            raise _not_the_copy(tarball, exc.tarinfo.name) from exc
        return
    members = tar.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if not (member.isfile() or member.isdir()) or path.is_absolute() or ".." in path.parts:
            raise _not_the_copy(tarball, member.name)
    tar.extractall(into, members=members)


def _not_the_copy(tarball: Path, member: str) -> DataFileError:
    return DataFileError(f"Archive {tarball} holds {member!r}, which is not a plain file or folder inside the "
                         f"archive's own tree; it is not the CIFAR-10 JPEG copy.")


def _refuse_split_less(copy: Path) -> None:
    if copy.is_dir() and not tree_splits(copy):  # (extracting onto it would fail: "Directory not empty")
        raise DataFileError(f"The CIFAR-10 copy extracted into the cache, {copy}, lacks its train/ or test/ class "
                            f"folders (removed since); delete that folder to extract the tarball again.")


def extract_once(tarball: Path, into: Path) -> Path:
    """Extract the CIFAR-10 JPEG tarball into `into`/cifar10-jpeg-<its content's digest>, atomically, once per
    content: a tarball replaced since gets a copy of its own, and a copy is never replaced while another process
    reads it. Processes take turns (a lock file beside the copies). The copy is named by the bytes it was extracted
    from (read once), whatever the file holds by then. Return that folder."""
    target = into / f"cifar10-jpeg-{file_digest(tarball)}"
    _refuse_split_less(target)
    if tree_splits(target):  # complete: a copy appears whole, by one rename
        _note_source(target, tarball)
        return target
    into.mkdir(parents=True, exist_ok=True)
    with open(into / "cifar10-jpeg.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if tree_splits(target):  # another process extracted it while this one waited
            _note_source(target, tarball)
            return target
        content = tarball.read_bytes()
        target = into / f"cifar10-jpeg-{hashlib.sha256(content).hexdigest()}"  # = file_digest of those bytes
        _refuse_split_less(target)
        if tree_splits(target):  # the tarball was replaced by a copy already extracted
            _note_source(target, tarball)
            return target
        tmp = Path(tempfile.mkdtemp(dir=into, prefix=partial_prefix()))
        try:
            try:
                with tarfile.open(fileobj=io.BytesIO(content)) as tar:
                    _extract_plain_files(tar, tmp, tarball)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise DataFileError(f"Archive {tarball} cannot be extracted ({exc.__class__.__name__}: "
                                    f"{first_line(exc)}); it is truncated or corrupt, so replace it with a fresh "
                                    f"copy.") from exc
            extracted = next((p.parent for p in tmp.rglob("train") if tree_splits(p.parent)), None)
            if extracted is None:
                raise DataFileError(f"Archive {tarball} holds no cifar10-jpeg/train/ and test/ folders.")
            (extracted / SOURCES).write_text(f"{tarball.resolve()}\n")
            (extracted / EXTRACTED_FILES).write_text(json.dumps(_split_signatures(extracted)))  # kept by the rename
            if extracted == tmp:  # (train/ at the archive's root) mkdtemp's 0700, not the mode a plain mkdir gives
                give_umask_mode(extracted)
            os.replace(extracted, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
