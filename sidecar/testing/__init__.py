"""The test kit shipped with the sidecar, for its own tests and for users' tests.

- `running_sidecar(config)`: a sidecar in the current event loop (ports may be 0).
- `SidecarProcess(config, workdir)`: `sidecar run` as a child process, for signals.
- `free_port()`: a TCP port free on 127.0.0.1 right now.
- `FakeClock`: time that moves only when a test says so.
- `Recorder`: a sink that records what an HTTP codec reports, for sans-IO tests.
- `sidecar.testing.consul.ConsulAgent`: a real `consul agent -dev` on loopback ports
  (imported from its module, not here: it is only for tests that need Consul).
"""

from .clock import FakeClock
from .inprocess import RunningSidecar, running_sidecar
from .ports import free_port
from .process import SidecarProcess
from .recorder import Recorder

__all__ = ["FakeClock", "Recorder", "RunningSidecar", "SidecarProcess", "free_port", "running_sidecar"]
