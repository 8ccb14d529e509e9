"""Test infrastructure (not part of the package): :mod:`.harness` runs a real ``carcheck serve`` process.

Tests import it as ``support.harness`` (pytest puts tests/ on ``sys.path``); bench/speed/service.py puts
tests/ on ``sys.path`` itself (``bench/_common.TESTS``)."""
