"""Lightning callbacks: figures at test end, progress lines for log files, and the ways a fit stops early
(divergence, Ctrl-C, SIGTERM)."""
