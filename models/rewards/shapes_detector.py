"""The shapes world's detector-style reward (connected components + counting, like GPO's YOLO counting
reward), kind "shapes-detector"; its code lives with the zoo in models/shapes_zoo/detector_reward.py."""

from models.shapes_zoo.detector_reward import ShapesDetectorReward  # noqa: F401  (registers "shapes-detector")
