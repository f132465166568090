"""Run a command and write its peak resident set (``ru_maxrss``, KB on Linux) to a file.

    python -S bench/maxrss.py OUT -- COMMAND [ARG...]

The kernel keeps a process's peak across ``exec`` and counts what it held before it: a child
forked straight from the harness, whose memory grows with what it has read, would report the
harness's size whenever that is larger than its own. Forked from this small process instead
(no ``site``, nothing imported beyond ``os`` and ``sys``), the command's peak is its own.
SIGTERM and SIGINT are passed on to the command, so stopping this process stops it too. Exits
with the command's exit code; death by a signal becomes 128 + its number.
"""

import os
import signal
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: maxrss.py OUT -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    out, command = argv[0], argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    def forward(signum: int, _frame: FrameType | None) -> None:
        os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _, status, usage = os.wait4(pid, 0)
    with open(out, "w", encoding="ascii") as handle:
        handle.write(f"{usage.ru_maxrss}\n")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
