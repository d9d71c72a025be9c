"""Second process for test_msgs_roundtrip: receives one SemanticVoxelGrid and one TFMessage over
real DDS and writes every field it got to a .npz file (run as a script, not collected by pytest)."""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from fusionocc_msgs.msg import SemanticVoxelGrid
from tf2_msgs.msg import TFMessage


def main(out_path: str, timeout_s: float) -> int:
    rclpy.init()
    node = rclpy.create_node("roundtrip_listener")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got: dict[str, object] = {}
    node.create_subscription(SemanticVoxelGrid, "/roundtrip/voxels", lambda m: got.setdefault("grid", m), qos)
    node.create_subscription(TFMessage, "/roundtrip/tf_static", lambda m: got.setdefault("tf", m), qos)
    print("READY", flush=True)
    deadline = time.monotonic() + timeout_s
    while len(got) < 2 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if len(got) < 2:
        print(f"timeout: got {sorted(got)}", file=sys.stderr)
        return 1
    g, tf = got["grid"], got["tf"]
    fields = {
        "frame_id": g.header.frame_id,
        "stamp": [g.header.stamp.sec, g.header.stamp.nanosec],
        "origin": [g.origin.position.x, g.origin.position.y, g.origin.position.z,
                   g.origin.orientation.x, g.origin.orientation.y, g.origin.orientation.z, g.origin.orientation.w],
        "resolution": g.resolution,
        "size": [g.size_x, g.size_y, g.size_z],
        "class_names": list(g.class_names),
        "class_colors": [[c.r, c.g, c.b, c.a] for c in g.class_colors],
        "free_label": g.free_label,
        "labels": np.frombuffer(bytes(g.labels), np.uint8),
        "confidence": np.frombuffer(bytes(g.confidence), np.uint8),
        "tf": [[t.header.frame_id, t.child_frame_id, t.header.stamp.sec, t.header.stamp.nanosec,
                t.transform.translation.x, t.transform.translation.y, t.transform.translation.z,
                t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w]
               for t in tf.transforms],
    }
    np.savez(out_path, **{k: np.asarray(v, dtype=object) if not isinstance(v, np.ndarray) else v for k, v in fields.items()})
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
