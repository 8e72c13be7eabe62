"""GitHub I/O as the App, reading only the fields Trimo uses."""
