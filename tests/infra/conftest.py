"""Fixtures of the infrastructure tests: nginx in front of replicas, a Redis Cluster.

They start real processes of their own (nginx, redis-server) on free loopback
ports and stop them by PID; ``scripts/ensure-infra`` (run by ``make test``)
installs the packages when missing."""

from __future__ import annotations

import sys
from pathlib import Path

# The gateway tests' helpers (ssegate_serve, free_port, events) serve these too.
sys.path.insert(0, str(Path(__file__).parent.parent / "gateway"))
