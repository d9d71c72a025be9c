"""Test-wide settings: keep DDS on loopback with a domain id unique to this test process."""
from __future__ import annotations

import os
import random

# Set before anything imports rclpy; child processes inherit them.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
if "FUSIONOCC_TEST_DOMAIN_ID" not in os.environ:
    # one domain per pytest process (xdist workers get their own), random across runs
    os.environ["FUSIONOCC_TEST_DOMAIN_ID"] = str(random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little")).randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["FUSIONOCC_TEST_DOMAIN_ID"]
os.environ.setdefault("OMP_NUM_THREADS", "2")
