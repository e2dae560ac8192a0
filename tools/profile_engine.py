"""cProfile the engine (parent) process of `m3engine serve` while under load, in CPU time.

Its event loop runs on the main thread, which is what cProfile sees; the timer is that thread's CPU
time, so a process descheduled on a busy VM does not charge the wait to whatever line it was on.
SIGUSR1 starts the profile (send it once the server is ready and the load runs), SIGUSR2 stops it
and writes the stats:

    PYTHONPATH=src python tools/profile_engine.py /tmp/engine.prof serve --model M --backend fake \
        --device cpu --frontends 2 --port 8099 &
    kill -USR1 $!; <load>; kill -USR2 $!
    python -c "import pstats; pstats.Stats('/tmp/engine.prof').sort_stats('tottime').print_stats(40)"
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType

from m3engine.cli.main import main

if __name__ == "__main__":
    profiler = cProfile.Profile(time.thread_time)

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(sys.argv[1])

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.exit(main(sys.argv[2:]))
