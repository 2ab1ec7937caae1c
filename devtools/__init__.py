"""Development tools, not installed with the package: the emulator, scratch projects, the demo."""
