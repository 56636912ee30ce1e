"""What the CLI's error contract looks like to the tests: one line on stderr, exit code 2."""

PREFIX = "tracer-tui: error: "


def one_error_line(code, err) -> str:
    """The message of a run that failed as the CLI must: exit 2, exactly one stderr line starting
    with PREFIX, no traceback. Returns the message after the prefix."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX) and "Traceback" not in err, err
    return lines[0][len(PREFIX):]
