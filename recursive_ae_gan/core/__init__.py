"""What every command shares: errors, the console, crash-safe writes, records read back, metric keys."""
