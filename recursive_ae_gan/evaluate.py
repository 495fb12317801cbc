"""Test a trained run on more recursion steps: ``python -m recursive_ae_gan.evaluate ckpt_path=CKPT``."""

from recursive_ae_gan.analysis.evaluate import main

if __name__ == "__main__":
    main()
