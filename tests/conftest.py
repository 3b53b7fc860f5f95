"""Test-session settings: JAX's persistent compilation cache is off for every test and every
process a test starts (``compile.cache`` defaults to a directory in the user's cache), so that the
suite neither reads nor leaves compiled programs there; tests/test_compile_cache.py turns it on
for its own processes."""
import os

os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
