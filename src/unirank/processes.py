"""Whether a process of this machine still runs: what tells a killed writer's leftovers from a live one's."""

from __future__ import annotations

import os


def is_running(pid: int) -> bool:
    """POSIX only: on Windows ``os.kill(pid, 0)`` ends the process, so callers ask only where ``os.name``
    is ``"posix"``."""
    try:
        os.kill(pid, 0)  # signal 0: asks, sends nothing
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True
