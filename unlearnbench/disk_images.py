"""Images read from a uint8 .npy file batch by batch, for datasets too large to hold in memory (ImageNet).

A `DiskImages` is a lazy view: rows of one [N, H, W, C] file, presented as [n, C, H, W] like a resident tensor.
Selecting (`select`) only composes row indices; indexing (`view[index]`) reads those rows with positioned reads
(`os.pread`: no memory map, so nothing of the file stays resident in this process beyond the batch read) and
returns a uint8 tensor on the view's device. `write_npy_in_chunks` writes such a file without holding it whole,
with the SHA-256 of its rows beside it, which `check_rows` compares where the whole file is read into memory anyway.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .errors import DataFileError
from .store import atomic_write, partial_prefix, publish


@dataclass(frozen=True)
class DiskImages:
    """Rows `rows` of the uint8 array in `path` (shape [*, H, W, C], data at byte `offset`), read to `device`."""

    path: str
    offset: int
    row_shape: tuple[int, int, int]  # H, W, C
    rows: np.ndarray
    device: torch.device = torch.device("cpu")

    @classmethod
    def open(cls, array: np.memmap, rows: np.ndarray | None = None) -> "DiskImages":
        """A view of the rows `rows` (default: all) of a .npy file opened with np.load(mmap_mode='r')."""
        if not isinstance(array, np.memmap) or array.dtype != np.uint8 or array.ndim != 4:
            raise TypeError("DiskImages needs a uint8 [N, H, W, C] array memory-mapped from a .npy file")
        rows = np.arange(array.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        return cls(str(array.filename), int(array.offset), tuple(array.shape[1:]), rows)

    @property
    def shape(self) -> torch.Size:
        h, w, c = self.row_shape
        return torch.Size((len(self.rows), c, h, w))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape))

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.row_bytes

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device: torch.device | str) -> "DiskImages":
        return replace(self, device=torch.device(device))

    def select(self, index) -> "DiskImages":
        """The view of the rows at `index` (LongTensor, bool mask, slice or array), reading nothing."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return replace(self, rows=self.rows[index])

    def __getitem__(self, index) -> torch.Tensor:
        """The images at `index`, read from disk: uint8 [n, C, H, W] on the view's device."""
        one = isinstance(index, (int, np.integer)) or (  # one image: [C, H, W], as a tensor's
            isinstance(index, (torch.Tensor, np.ndarray)) and index.ndim == 0)
        rows = np.atleast_1d(self.select(index).rows)
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        order = np.argsort(rows, kind="stable")
        with open(self.path, "rb", buffering=0) as f:
            start = 0
            while start < len(order):  # one read for every run of consecutive rows (evaluation reads in order)
                end = start + 1
                while end < len(order) and rows[order[end]] == rows[order[end - 1]] + 1:
                    end += 1
                first, count = int(rows[order[start]]), end - start
                data = _read(f.fileno(), count * self.row_bytes, self.offset + first * self.row_bytes, self.path)
                flat[order[start:end]] = np.frombuffer(data, dtype=np.uint8).reshape(count, -1)
                start = end
        tensor = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
        tensor = tensor[0] if one else tensor
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    @staticmethod
    def concat(views: Iterable["DiskImages"]) -> "DiskImages":
        """One view of several views' rows, in order; they must read the same file."""
        views = list(views)
        if len({(v.path, v.offset) for v in views}) != 1:
            raise ValueError("only views of one image file can be concatenated")
        return replace(views[0], rows=np.concatenate([v.rows for v in views]))


def _read(fd: int, size: int, offset: int, path: str) -> bytes:
    """`size` bytes at `offset` (os.pread returns at most about 2 GiB a call); a file that ends early is named."""
    parts, done = [], 0
    while done < size:
        part = os.pread(fd, size - done, offset + done)
        if not part:
            raise DataFileError(f"The decoded image cache {path} is truncated; delete it to decode the images again.")
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def write_npy_in_chunks(path: Path, count: int, row_shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> None:
    """Write a uint8 [count, *row_shape] .npy file from successive [k, *row_shape] chunks, through a temporary
    file and a rename, holding one chunk at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count, *row_shape)}
    written, digest = 0, hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=partial_prefix(), suffix=".npy", delete=False) as tmp:
        try:
            np.lib.format.write_array_header_1_0(tmp, header)
            for chunk in chunks:
                if chunk.shape[1:] != tuple(row_shape) or chunk.dtype != np.uint8:
                    raise ValueError(f"a chunk of {chunk.dtype} {chunk.shape[1:]} rows for {tuple(row_shape)} uint8")
                rows = np.ascontiguousarray(chunk).data  # the rows themselves, not a copy of them
                tmp.write(rows)
                digest.update(rows)
                written += len(chunk)
                del chunk, rows  # released before the next chunk is made, so one chunk is held at a time
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    if written != count:
        os.unlink(tmp.name)
        raise RuntimeError(f"wrote {written} of {count} images to {path}")
    atomic_write(digest_file(path), digest.hexdigest())  # first: a file that is there has its digest beside it
    publish(tmp.name, path)


def digest_file(path: Path | str) -> Path:
    """Where the SHA-256 of the rows of the .npy file `path` is written."""
    return Path(f"{path}.sha256")


def check_rows(path: str | Path) -> None:
    """Refuse, in one sentence, a decoded .npy file whose rows are not those written (bytes overwritten on disk):
    they would be trained on and evaluated under the images' key. A file written before digests were kept beside
    it is not checked. Reads the file in chunks of about 64 MiB."""
    try:
        written = digest_file(path).read_text().strip()
    except FileNotFoundError:
        return
    array = np.load(path, mmap_mode="r")  # the whole file, whatever view of it a caller holds
    digest, flat = hashlib.sha256(), array.reshape(len(array), -1)
    step = max(1, 2**26 // max(1, flat.shape[1]))
    for start in range(0, len(flat), step):
        digest.update(np.ascontiguousarray(flat[start:start + step]).data)
    if digest.hexdigest() != written:
        raise DataFileError(f"The decoded image cache {path} is damaged (its images differ from those written); "
                            f"delete it to decode the images again.")

