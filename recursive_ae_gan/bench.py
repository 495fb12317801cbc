"""Training throughput of the framework against plain PyTorch: ``python -m recursive_ae_gan.bench``."""

from recursive_ae_gan.perf.bench import main

if __name__ == "__main__":
    main()
