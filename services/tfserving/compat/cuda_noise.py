"""TensorFlow's CUDA start-up noise on a machine without a GPU driver, dropped; every other line kept.

What prints it: the full `tensorflow` wheel (tensorflow-serving-api requires it, not `tensorflow-cpu`)
carries CUDA stubs. When TensorFlow is imported, its libraries look for libcuda and log that they found
none; the first listing of devices then logs an error. TensorFlow 2.20 (the project's release,
services/tfserving/release.py) logs through its own logging, which TF_CPP_MIN_LOG_LEVEL=2 already
quiets except for the error:

    2026-11-28 06:20:03.846233: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.   (hidden at level 2)
    2026-11-28 06:20:03.846233: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)

TensorFlow 2.21 logs the same through Abseil, before anything could set a log level, so the stub
line shows at every level:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:… cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 00:00:… cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)

Both forms are recognised. The usual switches do not fit (measured here): TF_CPP_MIN_LOG_LEVEL=2
(set anyway, for TensorFlow's own info and warning lines) does not reach the cuInit error;
TF_CPP_MIN_LOG_LEVEL=3 hides it but also every real error TensorFlow logs; CUDA_VISIBLE_DEVICES=-1
changes none of them (the driver is missing, not hidden). So while TensorFlow loads and lists its
devices, the process's stderr (file descriptor 2, where the C++ code writes) goes through a pipe:
lines that are exactly this noise are dropped, every other line is passed on as it comes. The cuInit
error is dropped only when no driver exists (the stub said so, or libcuda.so.1, which the stub looks
for, cannot be opened): on a machine with a driver it is a real error, and stays. Afterwards stderr
is the original again.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ABSL_PREINIT = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR")


def _log_line(severity: bytes, rest: bytes) -> re.Pattern[bytes]:
    """A line TensorFlow logs, in Abseil's form (`I0000 00:00:… 123 file.cc:31] …`, TensorFlow 2.21)
    or in its own (`2026-11-28 06:20:03.846233: I external/…/file.cc:31] …`, TensorFlow 2.20)."""
    return re.compile(rb"(?:" + severity + rb"\d{4} [\d:. ]+\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: " + severity + rb" (?:\S*/)?)" + rest)


NO_DRIVER = _log_line(rb"I", rb"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.")
CUINIT_FAILED = _log_line(rb"E", rb"cuda_platform\.cc:\d+\] failed call to cuInit: .*")


def driver_missing() -> bool:
    """True when libcuda.so.1, the driver library TensorFlow's CUDA stub opens, cannot be opened."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return True
    return False


class NoiseFilter:
    """Decides line by line; remembers whether the stub reported a missing driver."""

    def __init__(self, no_driver: bool = False) -> None:
        self.no_driver = no_driver
        self.dropped = 0

    def keep(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n")
        if NO_DRIVER.fullmatch(text):
            self.no_driver = True
        elif not (ABSL_PREINIT.fullmatch(text) or (self.no_driver and CUINIT_FAILED.fullmatch(text))):
            return True
        self.dropped += 1
        return False


@contextmanager
def quiet_cuda_noise() -> Iterator[NoiseFilter]:
    """Inside the block, fd 2 is a pipe read by a thread that forwards every line but the noise to
    the original stderr."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    noise = NoiseFilter(no_driver=driver_missing())

    def pump() -> None:
        with open(read_end, "rb") as source:
            for line in source:
                if noise.keep(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield noise
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last writer: the thread reads to the end and stops
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child process still holds the pipe: the thread keeps its fd
            os.close(original)
