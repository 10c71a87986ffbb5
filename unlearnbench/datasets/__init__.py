"""The registered datasets, one module per source: `mnist` (the embedded 5,000-image subset, torchvision's MNIST
and Fashion-MNIST IDX files), `image_folder` (any ImageFolder tree, ImageNet), `cifar` (CIFAR-10 pickles or its JPEG
copy). Each loader checks its files and names the file in a one-sentence DataFileError when one is wrong;
`registration.register` adds a loader to `data.DATASETS`."""
from . import cifar, image_folder, mnist  # noqa: F401  (importing registers the datasets)
from .mnist import MNIST_FILES  # noqa: F401
from .registration import register  # noqa: F401  (for datasets added outside the package)
