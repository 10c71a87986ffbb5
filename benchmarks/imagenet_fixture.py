"""An ImageNet-layout fixture for the CPU: a 224-px tree and local "pretrained" weights, to run the paper's ImageNet
path (pretrained originals, streamed images, 5 validation images a class) end to end in minutes.

    python benchmarks/imagenet_fixture.py --out /tmp/imagenet-fixture
    python run_bench.py --grid benchmarks/imagenet_fixture.yaml --data-root /tmp/imagenet-fixture

Writes <out>/imagenet/{train,val}/<class>/<n>.JPEG: the first `--train-per-class` training and `--val-per-class`
test images of every CIFAR-10 class, taken from the JPEG copy in ../shared/data and upscaled to `--size` px. Then,
for every backbone of the fixture grid, trains a network on that training split with the suite's own trainer and
saves it as <out>/weights/<backbone name>.safetensors, where the `imagenet` recipe (0 epochs: originals are
pretrained weights) looks for it; prints its validation accuracy. The tree is not committed: this script is.
"""
from __future__ import annotations

import argparse
import io
import tarfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

from unlearnbench.data import load_dataset
from unlearnbench.grid import load_grid
from unlearnbench.models import build_backbone
from unlearnbench.training import Recipe, accuracy, predict_logits, train

HERE = Path(__file__).resolve().parent


def write_tree(cifar: Path, out: Path, train_per_class: int, val_per_class: int, size: int) -> int:
    """The fixture's image tree from the CIFAR-10 JPEG tarball (or its extracted folder); returns the image count."""
    wanted = {"train": train_per_class, "test": val_per_class}
    taken: dict[tuple[str, str], int] = defaultdict(int)

    def save(split: str, label: str, read) -> None:
        if taken[split, label] >= wanted[split]:
            return
        folder = out / "imagenet" / ("train" if split == "train" else "val") / label
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(read()) as img:
            img.convert("RGB").resize((size, size), Image.BICUBIC).save(
                folder / f"{taken[split, label]:04d}.JPEG", quality=90)
        taken[split, label] += 1

    if cifar.is_dir():
        for path in sorted(cifar.glob("*/*/*.jpg")):
            if path.parts[-3] in wanted:
                save(path.parts[-3], path.parts[-2], lambda p=path: p)
    else:
        with tarfile.open(cifar) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 3 and parts[-3] in wanted:
                    save(parts[-3], parts[-2], lambda m=member: io.BytesIO(tar.extractfile(m).read()))
    return sum(taken.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/imagenet-fixture"))
    parser.add_argument("--cifar", type=Path, default=HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
                        help="the CIFAR-10 JPEG tarball or its extracted cifar10-jpeg/ folder")
    parser.add_argument("--grid", type=Path, default=HERE / "imagenet_fixture.yaml",
                        help="the grid whose backbones get pretrained weights")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=15, help="pretraining epochs of every backbone")
    parser.add_argument("--cache-dir", type=Path, default=Path("results/cache"))
    args = parser.parse_args()

    if not args.cifar.exists():
        raise SystemExit(f"No CIFAR-10 JPEG copy at {args.cifar}; pass --cifar.")
    if (args.out / "imagenet").exists():
        raise SystemExit(f"{args.out / 'imagenet'} exists already; remove it or pass another --out.")
    start = time.perf_counter()
    count = write_tree(args.cifar, args.out, args.train_per_class, args.val_per_class, args.size)
    print(f"tree: {count} images of {args.size} px under {args.out / 'imagenet'} in {time.perf_counter() - start:.1f} s")

    from safetensors.torch import save_file

    grid = load_grid(str(args.grid))
    # the grid's own splits: with `val_from: test` the weights learn every training image, as ImageNet's do
    entry = next((d for d in grid.datasets if d.name == "imagenet"), None)
    if entry is None:
        raise SystemExit(f"{args.grid} has no imagenet dataset: the fixture is written for one.")
    data = load_dataset("imagenet", root=args.out, cache_dir=args.cache_dir, val_fraction=grid.val_fraction,
                        options=entry.options_dict)
    recipe = Recipe(epochs=args.epochs, batch_size=32, lr=0.05)
    for spec in grid.backbones:
        target = args.out / "weights" / f"{spec.name}.safetensors"
        if target.exists():
            raise SystemExit(f"{target} exists already: one weight file per backbone name.")
        start = time.perf_counter()
        torch.manual_seed(0)
        model = build_backbone(spec, data.num_classes, data.channels, data.image_size)
        train(model, data, recipe, seed=0, progress=False, desc=f"pretrain {spec.label}")
        acc = accuracy(predict_logits(model, data, data.test), data.test.labels)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(target))
        print(f"weights: {target} ({spec.label}, {args.epochs} epochs on {len(data.train)} images, "
              f"{time.perf_counter() - start:.1f} s): validation accuracy {acc:.1%}")


if __name__ == "__main__":
    main()
