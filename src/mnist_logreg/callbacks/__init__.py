"""Lightning callbacks: figures at test end, and the ways a fit stops early (divergence, Ctrl-C, SIGTERM)."""
