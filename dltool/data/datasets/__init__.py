"""Data set loaders, one module per family; dltool.data.DATASETS maps names to them (imported lazily,
so `dltool` starts without importing torchvision until a vision data set is used)."""
