"""Using a trained model outside training: the Python API (:mod:`~fer_robust.deploy.api`,
``fer_robust.load``), faces found in photos and videos and cropped the way each benchmark's images
were (:mod:`~fer_robust.deploy.faces`), the ONNX inference graph
(:mod:`~fer_robust.deploy.onnx_export`) and its torch-free runtime
(:mod:`~fer_robust.deploy.onnx_runtime`)."""
