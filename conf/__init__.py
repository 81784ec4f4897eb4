"""Hydra configs, installed as package data so `pkg://noisybench.conf` resolves."""
