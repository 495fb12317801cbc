"""Speed: the framework against a plain PyTorch loop (bench), and a lent GPU end to end (gpu_check)."""
