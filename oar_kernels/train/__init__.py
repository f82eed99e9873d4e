"""`python -m oar_kernels.train`: GRPO / OAR-G / OAR-P end to end."""
