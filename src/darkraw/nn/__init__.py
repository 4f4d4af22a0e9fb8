"""Networks and running them: the models, their input preparation and arithmetic, model files
and checkpoints, tiled inference and ONNX export.

Imports the layers below (:mod:`darkraw.synth`, :mod:`darkraw.classic`, :mod:`darkraw.raw`),
never :mod:`darkraw.training`: what training and inference share lives here.
"""
