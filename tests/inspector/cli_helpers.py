"""Shared helpers of the command-line tests: run ``inspector`` in process, check one-line errors."""

from __future__ import annotations

from inspector.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``inspector ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    """``err`` is exactly one non-empty line, no traceback and no internal error, holding every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
