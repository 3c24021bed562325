"""`ds01 doctor`: checks every invariant of BRIEF §2 on the host, one module per area.

    base        Status, Result (+ optional repair), Context (root, config, paths, probes)
    files       "does ds01's file still match what apply would write" (shared by *.current)
    nvidia_smi  queries work: NVIDIA's nvidia-smi is not shadowed and runs for ordinary users
    devices     layer 3: /dev/nvidia* modes, device group, driver params, uvm gate, rule files
    compute     who can really compute: cuInit as a plain, an exempt and a granted user, and
                whether the driver rewrites the gated nodes (devices.driver-rewrites)
    profile     layer 1: profile files, PAM, real login shells of non-exempt/exempt/granted users
    docker      layer 2 and the gate: docker group, gate group, default runtime, NVIDIA runtime
    daemon      ds01d: health, background loops, socket modes, host-access file, systemd files
    state       config validity and the read-only integrity check of the state database
    slurm       on a SLURM node: ConstrainDevices, GRES files, munge key, GRES vs inventory, and
                a real 1-GPU job (docs/slurm.md)
    runner      the ordered list of check ids, --fix, and the exit code

Checks only look; repairs run only under --fix and only when safe (see each module). Must not
import cli, client, daemon, services or store.
"""

from ds01.host.doctor.base import Context, Result, Status
from ds01.host.doctor.runner import CHECK_IDS, DoctorReport, run_doctor

__all__ = ["CHECK_IDS", "Context", "DoctorReport", "Result", "Status", "run_doctor"]
