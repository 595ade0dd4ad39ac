"""Data layer: the paper's config catalogue, the MedVision data-directory reader, demo data.

Import-light: nibabel/scipy load only when a reader, annotation or demo function is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .catalogue import BenchmarkConfig, Catalogue, load_catalogue
from .errors import DataNotFoundError, SampleDataError

if TYPE_CHECKING:  # pragma: no cover
    from .location import default_data_dir
    from .reader import MedVisionData

__all__ = ["BenchmarkConfig", "Catalogue", "DataNotFoundError", "MedVisionData", "SampleDataError",
           "default_data_dir", "load_catalogue"]


def __getattr__(name: str) -> Any:
    if name == "MedVisionData":
        from .reader import MedVisionData

        return MedVisionData
    if name == "default_data_dir":
        from .location import default_data_dir

        return default_data_dir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
