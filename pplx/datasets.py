"""Small data sets that ship with the installation (no download needed).

``breast_cancer`` comes from scikit-learn's bundled copy of the Wisconsin diagnostic breast
cancer data (569 rows, 30 features); ``eight_schools`` is Rubin's (1981) table, written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dataset:
    """Tensors of a data set plus a one-line description.

    Attributes:
        x: Inputs or known per-unit quantities.
        y: Observed outcomes.
        description: What the data are and where they come from.
        feature_names: Names of the columns of ``x`` when it has columns.
    """

    x: torch.Tensor
    y: torch.Tensor
    description: str
    feature_names: tuple[str, ...] = ()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Return a copy on ``device`` with floating tensors cast to ``dtype``."""
        dtype = dtype or self.x.dtype
        return Dataset(
            self.x.to(device=device, dtype=dtype),
            self.y.to(device=device, dtype=dtype),
            self.description,
            self.feature_names,
        )


def breast_cancer(standardize: bool = True, dtype: torch.dtype = torch.float32) -> Dataset:
    """Wisconsin diagnostic breast cancer data: 569 tumours, 30 features, binary label.

    Args:
        standardize: Centre each feature and scale it to unit standard deviation.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``Dataset`` with ``x`` of shape ``(569, 30)`` and ``y`` in ``{0., 1.}`` (1 = benign).
    """
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    x = torch.as_tensor(raw.data, dtype=torch.float64)
    if standardize:
        x = (x - x.mean(0)) / x.std(0)
    y = torch.as_tensor(raw.target, dtype=torch.float64)
    return Dataset(
        x.to(dtype),
        y.to(dtype),
        "Wisconsin diagnostic breast cancer (scikit-learn copy), 569 x 30, label 1 = benign",
        tuple(str(n) for n in raw.feature_names),
    )


# Rubin (1981), "Estimation in parallel randomized experiments", Table 2.
_EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
_EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools(dtype: torch.dtype = torch.float32) -> Dataset:
    """Rubin's eight schools: estimated coaching effects ``y`` and their standard errors ``x``."""
    return Dataset(
        torch.tensor(_EIGHT_SCHOOLS_SIGMA, dtype=dtype),
        torch.tensor(_EIGHT_SCHOOLS_Y, dtype=dtype),
        "Eight schools (Rubin 1981): SAT coaching effects and their standard errors",
        tuple(f"school_{i}" for i in range(8)),
    )


def binarized_digits(size: int = 8, seed: int = 0) -> torch.Tensor:
    """scikit-learn's bundled handwritten digits (1,797 images), binarised, as ``(N, size**2)``.

    The 8x8 images are upsampled to ``size x size`` (nearest neighbour) when ``size > 8``
    (e.g. 28 for MNIST-sized inputs) and thresholded at half intensity; a fixed random
    permutation with ``seed`` shuffles the rows.
    """
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.get_default_dtype()) / 16.0
    if size != 8:
        images = torch.nn.functional.interpolate(images.unsqueeze(1), size=(size, size))
        images = images.squeeze(1)
    binary = (images > 0.5).to(images.dtype).reshape(len(images), -1)
    perm = torch.randperm(len(binary), generator=torch.Generator().manual_seed(seed))
    return binary[perm]
