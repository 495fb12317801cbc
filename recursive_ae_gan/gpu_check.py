"""A lent GPU end to end, one markdown report: ``python -m recursive_ae_gan.gpu_check`` (``--quick``: the CPU)."""

import sys

from recursive_ae_gan.perf.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
