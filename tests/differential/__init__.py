"""Differential fuzz: the memory backend (the simulator's model) against real servers."""
