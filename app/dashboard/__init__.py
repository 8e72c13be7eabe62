"""The dashboard: pages, live updates and sign-in, served by `trimo serve` at `/`."""
