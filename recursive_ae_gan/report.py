"""One results table for many runs: ``python -m recursive_ae_gan.report outputs/multiruns/X``."""

from recursive_ae_gan.analysis.report import main

if __name__ == "__main__":
    main()
