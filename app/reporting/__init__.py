"""Run and preview events turned into what people see on GitHub, within the write budget."""
