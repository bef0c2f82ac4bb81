"""TensorFlow's CUDA start-up noise on a machine without a GPU driver, dropped; every other line kept.

What prints it: the full `tensorflow` 2.21 wheel (tensorflow-serving-api requires it, not
`tensorflow-cpu`) carries CUDA stubs. When TensorFlow is imported, libtensorflow_framework.so.2 and
the profiler plugin (_pywrap_profiler_plugin.so) each look for libcuda and each log, through its own
copy of Abseil's logging, before anything could set a log level:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:… cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.

and the first listing of devices then logs

    E0000 00:00:… cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)

The usual switches do not fit (measured here): TF_CPP_MIN_LOG_LEVEL=2 (set anyway, for TensorFlow's
own info and warning lines) does not reach the two stub lines, printed as the libraries load;
TF_CPP_MIN_LOG_LEVEL=3 hides the cuInit line but also every real error TensorFlow logs;
CUDA_VISIBLE_DEVICES=-1 changes none of the three (the driver is missing, not hidden). So while
TensorFlow loads and lists its devices, the process's stderr (file descriptor 2, where the C++ code
writes) goes through a pipe: lines that are exactly this noise are dropped, every other line is
passed on as it comes. The cuInit error is dropped only after the stub said that no driver exists:
on a machine with a driver it is a real error, and stays. Afterwards stderr is the original again.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ABSL_PREINIT = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR")
NO_DRIVER = re.compile(rb"I\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.")
CUINIT_FAILED = re.compile(rb"E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*")


class NoiseFilter:
    """Decides line by line; remembers whether the stub reported a missing driver."""

    def __init__(self) -> None:
        self.no_driver = False
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
    noise = NoiseFilter()

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
