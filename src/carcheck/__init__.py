"""carcheck: vehicle inspection from ordinary photos.

The main entry point is :func:`assess` (same as ``carcheck assess``): the photos of one case
in, a :class:`~carcheck.schema.CaseReport` out.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:  # one source for the version: the installed package's metadata (pyproject.toml)
    __version__ = _version("carcheck")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def assess(paths, case_id=None, config=None, out_dir=None, **kwargs):
    """Assess the photos of one case; see :func:`carcheck.pipeline.assess.assess`."""
    from .pipeline.assess import assess as _assess

    return _assess(paths, case_id=case_id, config=config, out_dir=out_dir, **kwargs)


__all__ = ["__version__", "assess"]
