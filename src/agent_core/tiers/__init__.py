"""Shared and in-process tiers, and the coherence layer that keeps them true to the store."""
