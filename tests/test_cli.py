import pytest
from typer.testing import CliRunner

from carcheck.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["dataset"], ["dataset", "stats"], ["dataset", "check"], ["train"],
                                  ["train", "segmentation"], ["evaluate"], ["evaluate", "segmentation"], ["assess"]])
def test_every_command_has_help(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_train_rejects_unknown_taxonomy(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("{}")
    r = runner.invoke(app, ["train", "segmentation", "--task", f"parts:nope:{f}"])
    assert r.exit_code != 0 and "unknown taxonomy" in r.output
