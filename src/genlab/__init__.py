"""genlab: reproducible GAN and VAE on MNIST."""

import os as _os

from genlab import cpu_pins as _cpu_pins

__version__ = "0.1.0"

# OpenMP threads that spin while waiting collapse training when another process wants a core: measured on a
# 2-core machine, a GAN epoch went from 17 s to 52 s with one busy neighbour under the default policy, and to
# 31 s with PASSIVE. PASSIVE costs 19-31% of the speed when the machine is idle (a 2-core Zen 4 VM, docs/speed.md):
# on a dedicated machine, OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=1000 buys that back. Must be set before torch loads
# libgomp; genlab is imported before torch in every entry point.
# Whether genlab set it, here or in a genlab process above (genlab.cpu_pins.MARKER), not the user: bench/ runs its
# plain baselines without it.
_marked = _os.environ.get(_cpu_pins.MARKER, "").split()
WAIT_POLICY_SET = "OMP_WAIT_POLICY" not in _os.environ or "OMP_WAIT_POLICY" in _marked
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ[_cpu_pins.MARKER] = " ".join([*_marked, "OMP_WAIT_POLICY"])
# The same CPU kernels on AVX2 and AVX-512 machines, hence the same bits (genlab.cpu_pins); also before torch.
_cpu_pins.apply()
