"""A repository's environment setup (`setup:`), run once per cache key and restored in O(1)."""
