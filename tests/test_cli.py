import subprocess
import sys

from edge.cli import main


def test_help_lists_and_exits_zero(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "edge" in capsys.readouterr().out


def test_python_dash_m_edge_runs():
    out = subprocess.run(
        [sys.executable, "-m", "edge", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("edge ")
