"""The command line's grammar: every group and command is reachable, and --help stays fast (no
torch, no model import) because the CLI modules import heavy modules only inside a command."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from carcheck.cli import app

runner = CliRunner()

COMMANDS = [["dataset", "stats"], ["dataset", "check"], ["train", "segmentation"], ["train", "classifier"],
            ["train", "verification"], ["train", "standalone"], ["evaluate", "segmentation"], ["assess"], ["batch"],
            ["export", "onnx"], ["privacy", "detect"]]


def test_help_of_every_command_imports_no_heavy_module():
    """--help of every command, in a fresh interpreter: torch, cv2 and onnxruntime are not imported
    (breaks when a CLI module imports one at the top)."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom carcheck.cli import app\nr = CliRunner()\n"
            f"for args in {COMMANDS!r}:\n"
            "    res = r.invoke(app, [*args, '--help'])\n"
            "    assert res.exit_code == 0 and 'Usage' in res.output, (args, res.output)\n"
            "print(sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'ray') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("args", COMMANDS)
def test_a_missing_required_argument_is_a_usage_error(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output


def test_train_rejects_unknown_taxonomy(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("{}")
    r = runner.invoke(app, ["train", "segmentation", "--task", f"parts:nope:{f}"])
    assert r.exit_code == 2 and "unknown taxonomy" in r.output
