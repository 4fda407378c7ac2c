"""Small shared parts with one job each: backbones, timing, box coding, anchors, losses."""
