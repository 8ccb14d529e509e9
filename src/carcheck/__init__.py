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
    """Assess the photos of one case (:func:`carcheck.pipeline.assess.assess`); with ``out_dir``, also write
    ``report.json`` and ``report.html`` there (:func:`carcheck.report.html.write_report`). Returns the
    :class:`~carcheck.schema.CaseReport`.

    Raises:
        FileNotFoundError / ValueError / KeyError: missing or bad model files. OSError: ``out_dir`` cannot be written.
    """
    from .pipeline.assess import Assessor

    assessor = kwargs.pop("assessor", None)
    track = kwargs.pop("track", lambda it, **k: it)
    assessor = assessor or Assessor(config, **kwargs)
    report, visuals = assessor.assess(paths, case_id, track=track)
    if out_dir is not None:
        from .report.html import write_report

        write_report(report, visuals, out_dir, assessor.part_names, assessor.damage_names)
    return report


__all__ = ["__version__", "assess"]
