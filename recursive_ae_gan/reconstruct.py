"""Reconstruct your own images step by step: ``python -m recursive_ae_gan.reconstruct ckpt_path=CKPT input=PATH``."""

from recursive_ae_gan.analysis.reconstruct import main

if __name__ == "__main__":
    main()
