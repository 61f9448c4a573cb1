"""`tfds:NAME` datasets read from prepared array_record files with `tfds.data_source` (no TensorFlow).

Nothing is downloaded here: a dataset that is not prepared in `tfds_data_dir` is a one-line error saying
how to prepare it. Image datasets become `x` float32 NHWC in [0, 1] and `y` int32; other features (e.g.
`text`) are kept under their own names.
"""

from __future__ import annotations

import numpy as np

from research.data.registry import Dataset, register
from research.errors import ConfigError


def _prepare_hint(name: str, data_dir: str | None) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (f"prepare it once with `pip install -e '.[tfds-build]' && tfds build {name}{where}` on a machine with "
            f"network access, then pass --tfds_data_dir")


def _to_arrays(source, features) -> dict[str, np.ndarray]:
    rows = [source[i] for i in range(len(source))]
    out: dict[str, np.ndarray] = {}
    for key in list(features.keys()):
        values = [r[key] for r in rows]
        if key == "image":
            out["x"] = np.stack(values).astype(np.float32) / 255.0
        elif key == "label":
            out["y"] = np.asarray(values, dtype=np.int32)
        else:
            out[key] = np.asarray(values) if values and np.ndim(values[0]) else np.array(values, dtype=object)
    return out


@register("tfds:")
def tfds_dataset(name: str, tfds_data_dir: str | None = None) -> Dataset:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(f"unknown TFDS dataset {name!r} (see `tfds.list_builders()`)") from None
    # An unprepared builder (and tfds.testing.mock_data) knows no splits: ask for the usual two by name.
    wanted = list(builder.info.splits) or ["train", "test"]
    try:
        sources = {s: tfds.data_source(name, split=s, data_dir=tfds_data_dir, download=False) for s in wanted}
    except Exception as e:  # tfds raises several types for "not prepared here"
        raise ConfigError(f"TFDS dataset {name!r} is not prepared in {tfds_data_dir or 'the default TFDS dir'} "
                          f"({type(e).__name__}); {_prepare_hint(name, tfds_data_dir)}") from None
    features = builder.info.features
    splits = {split: _to_arrays(src, features) for split, src in sources.items()}
    label = features["label"] if "label" in list(features.keys()) else None
    num_classes = getattr(label, "num_classes", None)
    return Dataset(f"tfds:{name}", splits, num_classes=num_classes, info={"source": "tfds.data_source",
                                                                          "data_dir": tfds_data_dir})
