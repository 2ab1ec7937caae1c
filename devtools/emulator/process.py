"""The emulator in a process of its own, driven over its control endpoints.

The benchmark needs this: in its own process the server's CPU time is not counted as the
pipeline's, and it does not compete with the pipeline for the interpreter lock.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from devtools.emulator.server import Knobs
from devtools.emulator.universe import BUCKET, Universe

STARTUP_TIMEOUT_S = 120


class EmulatorProcess:
    """`python -m devtools.emulator serve` as a child process, with the `Emulator` API."""

    def __init__(self, universe: Universe, knobs: Knobs | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="vision-emulator-")
        folder = Path(self._tmp.name)
        universe.save(folder / "universe.json")
        knobs = knobs or Knobs()
        command = [
            *(sys.executable, "-m", "devtools.emulator", "serve"),
            *("--universe", str(folder / "universe.json"), "--port-file", str(folder / "port")),
            *("--latency-ms", str(knobs.latency_ms), "--seed", str(knobs.seed)),
            *("--slowdown-rate", str(knobs.slowdown_rate), "--reset-rate", str(knobs.reset_rate)),
            *("--retry-after", "none" if knobs.retry_after_s is None else str(knobs.retry_after_s)),
        ]
        for prefix, kind in knobs.prefix_faults.items():
            command += ["--fault", f"{prefix}={kind}"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self._wait_for_port(folder / 'port')}"
        self.listing_url = f"{self.url}/{BUCKET}"
        self.download_url = self.url
        self._control = requests.Session()

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("the emulator did not start listening in time")
            time.sleep(0.05)
        return int(port_file.read_text())

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._control.request(method, f"{self.url}/_emulator/{path}", json=payload)
        response.raise_for_status()
        return response.json() if response.content else None

    def set_universe(self, universe: Universe) -> None:
        self._call("PUT", "universe", universe.to_dict())

    def set_knobs(self, knobs: Knobs) -> None:
        self._call("PUT", "knobs", knobs.to_dict())

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "counters")

    def reset_counters(self) -> None:
        self._call("POST", "counters/reset")

    def stop(self) -> None:
        self._control.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._tmp.cleanup()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
