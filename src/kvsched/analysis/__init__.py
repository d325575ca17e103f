"""Questions answered by many simulations: stability limits (`capacity`), parameter tuning (`tuning`)."""
