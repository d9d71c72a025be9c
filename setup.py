"""fusionocc_ros: FusionOcc LiDAR+camera 3D semantic occupancy for ROS 2, plus offline tools.

One setup.py serves two installers: colcon (ament_python; scripts land in lib/fusionocc_ros so
`ros2 run` finds them) and pip (console scripts on PATH). Every pin lives in requirements.txt.
"""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = "fusionocc_ros"
HERE = Path(__file__).resolve().parent
# Shipped inside the wheel as fusionocc_ros/data/<name> (fusionocc_ros.resources finds them with
# importlib.resources); the repository keeps the one copy of each file at its usual place.
PACKAGE_DATA_FILES = {
    "config/occ_node.yaml": "config/occ_node.yaml",
    "config/occ.rviz": "config/occ.rviz",
    "launch/occ.launch.py": "launch/occ.launch.py",
    "msg/SemanticVoxelGrid.msg": "fusionocc_msgs/msg/SemanticVoxelGrid.msg",
}


class BuildWithData(build_py):
    """build_py that also copies PACKAGE_DATA_FILES into the built fusionocc_ros package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the source tree
        for name, source in PACKAGE_DATA_FILES.items():
            target = Path(self.build_lib) / PACKAGE / "data" / name
            self.mkpath(str(target.parent))
            self.copy_file(str(HERE / source), str(target))


def read_pins(section: str) -> list[str]:
    """Return the requirement lines of one `[section]` of requirements.txt."""
    pins: dict[str, list[str]] = {}
    current = None
    for raw in (HERE / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            pins[current] = []
        elif current is not None:
            pins[current].append(line)
    return pins[section]


CONSOLE_SCRIPTS = [
    # offline tools (no ROS needed)
    "fusionocc-synth = fusionocc_synth.cli:main",
    "fusionocc-prepare = fusionocc_core.data.prepare:main",
    "fusionocc-train = fusionocc_core.tools.train:main",
    "fusionocc-eval = fusionocc_core.tools.evaluate:main",
    "fusionocc-score = fusionocc_core.tools.score:main",
    "fusionocc-convert = rosbag_tools.convert:main",
    "fusionocc-bag-info = rosbag_tools.info:main",
    "fusionocc-bag-extract = rosbag_tools.extract:main",
    "fusionocc-replay = fusionocc_ros.replay:main",
    # ROS 2 graph tools (need rclpy)
    "fusionocc-play = rosbag_tools.play:main",
    "fusionocc-record = rosbag_tools.record:main",
    "fusionocc-node = fusionocc_ros.node:main",
    "occupancy_node = fusionocc_ros.node:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description=__doc__.splitlines()[0],
    packages=find_packages(include=["fusionocc_core*", "fusionocc_synth*", "fusionocc_ros*", "rosbag_tools*"]),
    package_data={"fusionocc_core": ["presets/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"] + read_pins("core"),
    extras_require={"ros": read_pins("ros"), "dev": read_pins("dev")},
    cmdclass={"build_py": BuildWithData},
    zip_safe=False,
    maintainer="fusionocc_ros maintainers",
    maintainer_email="maintainers@fusionocc-ros.org",
    license="Apache-2.0",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
