"""The shapes-world zoo: trained tiny Stable Diffusion pipelines and reward models, in real formats.

`python -m models.shapes_zoo.build --out zoo` trains and writes them; see build.py for what is in it."""
