"""Train, then test, one model: ``python -m recursive_ae_gan.train model=rae_gan data=cifar10`` (``-m``: a sweep)."""

from recursive_ae_gan.run.train import main

if __name__ == "__main__":
    main()
