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


def test_no_subcommand_means_run(monkeypatch):
    import edge.cli.run

    seen = {}
    monkeypatch.setattr(edge.cli.run, "cmd_run", lambda args: seen.update(vars(args)) or 0)
    assert main(["-v"]) == 0
    assert seen["command"] == "run" and seen["verbose"] is True
