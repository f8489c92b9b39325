"""genlab: reproducible GAN and VAE on MNIST."""

import os as _os

from genlab import cpu_pins as _cpu_pins

__version__ = "0.1.0"

# OpenMP threads that spin while waiting collapse training when another process wants a core: measured on a
# 2-core machine, a GAN epoch went from 17 s to 52 s with one busy neighbour under the default policy, and to
# 31 s with PASSIVE (which costs ~10% when the machine is idle). Must be set before torch loads libgomp;
# genlab is imported before torch in every entry point. Set OMP_WAIT_POLICY=ACTIVE to opt out.
WAIT_POLICY_SET = "OMP_WAIT_POLICY" not in _os.environ  # by genlab, not the user: bench/ runs its baselines without
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same CPU kernels on AVX2 and AVX-512 machines, hence the same bits (genlab.cpu_pins); also before torch.
_cpu_pins.apply()
