"""A service's output, capped into its log file: the shim every native service is started through.

The services outlive the `twinserve` command that starts them, so the writer must be a process of
its own. `python -m twinserve.logcap LOG MAX_BYTES BACKUPS`, with the service's command in the
environment (CAPTURED_CMD, so the shim's command line does not repeat it), forks the writer and then
becomes the service (exec): the service keeps the PID the supervisor started (its process group, its
exit code for the start-up check), and the writer is a member of that group, so stopping the group
stops it too.

The writer is the standard library's RotatingFileHandler over the pipe's lines: when the file would
pass MAX_BYTES it becomes `<log>.1` (older ones shift up to BACKUPS) and a new one begins, always on
a line boundary. It leaves when the last process holding the pipe has exited (end of file); on
SIGTERM (the group being stopped) it keeps copying what the dying service still writes, for at most
GRACE_S seconds. A failed write (a full disk) drops that output and goes on reading: a stalled pipe
would block the service itself.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

CAPTURED_CMD = "_TWINSERVE_CAPTURED_CMD"
BACKUPS = 1  # rolled files kept beside each service's log: <name>.log.1
GRACE_S = 10


def command(log_path: str | Path, max_bytes: int, backups: int = BACKUPS) -> list[str]:
    """The command that runs a service (given in the environment under CAPTURED_CMD) through the shim."""
    return [sys.executable, "-m", "twinserve.logcap", str(log_path), str(max_bytes), str(backups)]


class _Lines(logging.handlers.RotatingFileHandler):
    """Writes each line as it came; a failed write is dropped rather than reported (to whom?)."""

    terminator = ""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def write_capped(source: int, path: str | Path, max_bytes: int, backups: int) -> None:
    """Copy the lines read from the file descriptor `source` (closed at the end) into `path`, rolled over at `max_bytes`.
    With no backups the file is simply started afresh when full."""
    handler = _Lines(path, maxBytes=max(1, max_bytes), backupCount=max(1, backups), encoding="utf-8", errors="replace")
    if backups <= 0:
        handler.rotator = lambda source_path, _: os.unlink(source_path)
    record = logging.LogRecord("service", logging.INFO, "", 0, "", None, None)
    with os.fdopen(source, "r", encoding="utf-8", errors="replace", newline="") as lines:
        for line in lines:
            record.msg = line
            handler.emit(record)
    handler.close()


def main(argv: list[str]) -> None:
    path, max_bytes, backups = argv[0], int(argv[1]), int(argv[2])
    env = dict(os.environ)
    cmd = json.loads(env.pop(CAPTURED_CMD))
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(write_end)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: signal.alarm(GRACE_S))  # SIGALRM's default action ends it
        try:
            write_capped(read_end, path, max_bytes, backups)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        os.write(2, f"cannot start {cmd[0]}: {exc}\n".encode())
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
