"""A torch Dataset over a store file: any set of views for one split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from skelctl.data.store import Store, StoreError


class SkeletonDataset(torch.utils.data.Dataset):
    """Samples of one split as dicts ``{view: (C, T, V, M) tensor, "label": int, "index": int}``.

    With ``sequence=True`` each item also carries the cleaned variable-length joint sequence
    ``(C, L, V, M)`` (for crop-resize augmentation; batches of it need a custom collate).
    The HDF5 file is opened lazily in each worker process. DataLoader batches are read with one
    sorted fancy-index read per view (``__getitems__``), about twice as fast as per-sample reads.
    """

    def __init__(self, path: str | Path, split: str = "all", views: Sequence[str] = ("joint",),
                 sequence: bool = False):
        self.store = Store(path)
        self.views = tuple(views)
        for view in self.views:
            self.store.view(view)  # fails early, naming the file, for a view it lacks
        if sequence:
            self.store.offsets
        self.sequence = sequence
        self.indices = self.store.split(split)
        self.all_labels = self.store.meta(["label"])["label"]
        self.labels = self.all_labels[self.indices]

    @property
    def num_classes(self) -> int:
        return int(self.store.attr("num_classes"))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.store)):
            raise StoreError(f"{self.store.path}: index out of range")
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        arrays = {}
        for view in self.views:
            block = self.store.view(view)[unique]  # h5py wants increasing indices
            picked = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
            picked[order] = block[inverse]
            arrays[view] = picked
        items = []
        for k, row in enumerate(rows):
            item = {view: torch.from_numpy(arrays[view][k]) for view in self.views}
            if self.sequence:
                item["sequence"] = torch.from_numpy(
                    np.ascontiguousarray(self.store.sequence(int(row)).transpose(1, 0, 2, 3)))
            item["label"] = int(self.all_labels[row])
            item["index"] = int(row)
            items.append(item)
        return items
