"""Process measurements shared by the PyTorch benchmark scripts (imported from their folder)."""


def vmhwm_kib():
    """Peak resident set size of this process (VmHWM) in KiB; 0 where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
