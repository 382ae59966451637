"""Data loading: `load_dataset(DataConfig(...))` picks a backend, parses, cleans, and reports.

Backends (one module each) only parse their format into `RawData`; `lmrec.export.cleaning` turns it
into a canonical `Dataset` the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from lmrec.export.cleaning import CleaningReport, DataError, RawData, clean
from lmrec.export.dataset import Dataset
from lmrec.export.loaders.csv_loader import CsvColumns, load_csv
from lmrec.export.loaders.movielens import load_ml100k, load_movielens_csv
from lmrec.export.loaders.synthetic import SyntheticConfig, generate_synthetic

DatasetName = Literal["synthetic", "ml-100k", "ml-latest-small", "movielens-csv", "csv"]

__all__ = [
    "CsvColumns",
    "DataConfig",
    "DataError",
    "DatasetName",
    "LoadResult",
    "SyntheticConfig",
    "load_dataset",
    "make_reader",
]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: DatasetName = "synthetic"
    data_dir: Path | None = None  # required by every backend except synthetic
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    implicit_threshold: float | None = None  # keep weight >= threshold; None: every rating counts
    csv: CsvColumns | None = None  # for dataset="csv"; None: CsvColumns() defaults
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    dataset: Dataset
    report: CleaningReport


def load_dataset(config: DataConfig) -> LoadResult:
    """Load, clean and index the configured data set; DataError says what is wrong with the input."""
    if config.min_user_interactions < 0 or config.min_item_interactions < 0:
        raise ValueError("min interaction counts must be >= 0")
    raw = make_reader(config.dataset)(config)
    dataset, report = clean(
        raw,
        implicit_threshold=config.implicit_threshold,
        min_user_interactions=config.min_user_interactions,
        min_item_interactions=config.min_item_interactions,
    )
    return LoadResult(dataset=dataset, report=report)


def make_reader(name: str) -> Callable[[DataConfig], RawData]:
    """The backend that parses data set `name` into raw rows."""
    try:
        return _READERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_READERS)}") from None


def _data_dir(config: DataConfig, hint: str) -> Path:
    if config.data_dir is None:
        raise DataError(f"{config.dataset}: no data directory given", hint)
    path = Path(config.data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{config.dataset}: data directory {path} does not exist", hint)
    return path


def _read_synthetic(config: DataConfig) -> RawData:
    return generate_synthetic(config.synthetic)


def _read_ml100k(config: DataConfig) -> RawData:
    data_dir = _data_dir(config, "pass --data-dir pointing at the unpacked ml-100k folder")
    raw = load_ml100k(data_dir)
    # Your own data in ml-100k's format is named after its folder, as for the other readers, so that the
    # bars set on MovieLens-100K are never judged on it and --reuse never mixes the two.
    return raw if data_dir.name == "ml-100k" else replace(raw, name=_label("ml-100k", data_dir.name, own=()))


def _label(loader: str, folder: str, *, own: tuple[str, ...] = ()) -> str:
    """A data set's name: its folder's, unless that is the name of a built-in data set (`own` excepted).
    Then the loader prefixes it (`csv:ml-100k`), so that reports, and the quality bars the issue sets on
    ml-100k alone, never take another data set for the built-in one."""
    built_in = {"ml-100k", "ml-latest-small", "synthetic"} - set(own)
    return f"{loader}:{folder}" if folder in built_in else folder


def _read_movielens_csv(config: DataConfig) -> RawData:
    hint = "pass --data-dir pointing at the unpacked MovieLens folder with ratings.csv and movies.csv"
    data_dir = _data_dir(config, hint)
    # ml-latest-small is this format, so a movielens-csv folder of that name keeps it.
    name = (config.dataset if config.dataset == "ml-latest-small" and data_dir.name == "ml-latest-small"
            else _label(config.dataset, data_dir.name, own=("ml-latest-small",)))
    return load_movielens_csv(data_dir, name=name)


def _read_csv(config: DataConfig) -> RawData:
    data_dir = _data_dir(config, "pass --data-dir pointing at the folder with the CSV files")
    return load_csv(data_dir, config.csv or CsvColumns(), name=_label("csv", data_dir.name) or "csv")


_READERS: dict[str, Callable[[DataConfig], RawData]] = {
    "synthetic": _read_synthetic,
    "ml-100k": _read_ml100k,
    "ml-latest-small": _read_movielens_csv,
    "movielens-csv": _read_movielens_csv,
    "csv": _read_csv,
}
