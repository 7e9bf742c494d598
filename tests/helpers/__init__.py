"""What the tests share: fakes of CUDA and TensorRT (named as fakes: nothing here touches a GPU), a fitted tiny
PRN checkpoint with real-photo frames, and the Lite0 ImageNet classifier that proves the bundled weights load.

Imported as `tests.helpers.<module>`: tests/ is a package, so pytest puts the repository root on sys.path."""
