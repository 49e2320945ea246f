"""Video -> HDF5 features (RGB, optical flow, objects). See ``rulstm-extract --help``."""
